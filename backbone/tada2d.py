"""TAda2D (TAdaConv paper, section 4 and appendix D) and, with TAdaConv switched off, the R2D / TSN baseline.

Structure (torchvision ResNet naming, so ImageNet state dicts load key for key):

* stem: ``conv1`` 7x7 stride 2 -> ``bn1`` -> ReLU, no max pool (appendix D);
* ``layer1``..``layer4`` (res2..res5): the first block of every stage is spatially strided, res2
  included (the official TAda2D strides res2 where torchvision has its max pool), so a 224-pixel
  frame ends at 7x7 like a ResNet. There is never any temporal downsampling;
* in a stage chosen by ``tada_stages`` the spatial 3x3 conv of each block (``conv2`` of a bottleneck,
  ``conv1`` of a basic block) is a ``TAdaConv2d`` calibrated by a ``RouteFunction`` (``route``), and,
  with ``temporal_aggregation``, followed by the temporal feature aggregation of eq. 7:
  ``relu(BN1(y) + BN2(avgpool_t(y)))``, ``BN2`` (``pool_bn``) zero-initialised;
* head: global average pool over T, H, W -> clip feature (B, D) -> dropout -> one linear per head.

At initialisation ``alpha == 1`` and ``BN2 == 0`` exactly, so TAda2D computes what R2D computes with
the same weights.

Frames stay folded into the batch axis, ``(B*T, C, H, W)`` clip-major and frame-minor, from the stem
to the final pooling; blocks get ``num_frames`` to unfold them when they look along time.

What TAda2D costs over R2D is elementwise work over whole feature maps (the route function's spatial
mean and the per-frame input scaling before each TAdaConv, the temporal pooling, BN2 and the sum after
it) plus the route function's small ops on ``(B, C, T)`` descriptors. Two exact rewrites cut it:

* inference (autograd off, BNs in eval mode; ``TAda2D.set_fast_inference``): every BN outside
  eq. 7 is folded into the conv before it (``conv_bn``; R2D too, 0.79-0.93x its time), eq. 7 becomes one
  per-channel 3-tap temporal filter (``aggregate_relu_inference``, 4 passes instead of 7), the
  scaling overwrites the block's own scratch tensor instead of allocating a copy, and the route
  function's hidden BN is folded into its first temporal conv (three matmuls and a ReLU). The
  foldings are computed once and kept until a weight changes (``DerivedTensors``): recomputed on
  every forward they would cost a dozen small ops per block;
* training: the pooling's backward is the same pooling of the gradient (``_TemporalAvgPool3``), the
  route's mean passes its gradient as a broadcast view, and BN1 is recorded after BN2 so that the two
  gradients for the conv output are summed in place.

The plain inference path stays (``set_fast_inference(False)``; also taken whenever autograd is on);
the tests compare it, and the training gradients, with plainly written references.
"""

import torch
from torch import Tensor, nn

from backbone.tadaconv import DerivedTensors, RouteFunction, TAdaConv2d, clear_derived_tensors

# depth -> (block type, blocks per stage res2..res5)
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),  # ResNet-10: the smallest 4-stage net, for CPU demos and tests
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def _shift_sum3(frames: Tensor, num_frames: int) -> Tensor:
    """``(frames[t-1] + frames[t] + frames[t+1]) / 3`` per clip, zero beyond the clip's ends.

    Args:
        frames: ``(B*T, C, H, W)``, clip-major, frame-minor (any memory format).
        num_frames: T.

    Returns:
        ``(B*T, C, H, W)``, a new tensor in the memory format of ``frames``.
    """
    clips = frames.reshape(-1, num_frames, *frames.shape[1:])  # (B*T, C, H, W) -> (B, T, C, H, W)
    pooled = clips * (1.0 / 3.0)
    pooled[:, 1:].add_(clips[:, :-1], alpha=1.0 / 3.0)  # frame t gets frame t-1
    pooled[:, :-1].add_(clips[:, 1:], alpha=1.0 / 3.0)  # frame t gets frame t+1
    return pooled.reshape(frames.shape)  # (B, T, C, H, W) -> (B*T, C, H, W), a view


class _TemporalAvgPool3(torch.autograd.Function):
    """``_shift_sum3`` with a backward that is ``_shift_sum3`` of the gradient.

    The pooling is linear, ``pooled = P @ frames`` along time with ``P`` the tridiagonal T x T
    matrix of 1/3 (zero padding), and ``P`` is symmetric, so the gradient is ``P.T @ grad = P @ grad``.
    Autograd through the in-place slice additions would instead build zero-filled full-size gradients
    for each slice (``slice_backward``) and copy them about (``CopySlices``): a training step spent
    several extra passes over every block's output there.
    """

    @staticmethod
    def forward(ctx, frames: Tensor, num_frames: int) -> Tensor:
        ctx.num_frames = num_frames
        return _shift_sum3(frames, num_frames)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        # Through apply, so that the gradient is itself differentiable (double backward).
        return _TemporalAvgPool3.apply(grad, ctx.num_frames), None


def temporal_avg_pool3(frames: Tensor, num_frames: int) -> Tensor:
    """Average of frames t-1, t, t+1, for every frame of every clip.

    Matches the official ``nn.AvgPool3d((3, 1, 1), stride 1, padding (1, 0, 0))`` with its default
    ``count_include_pad=True``: the missing neighbour of the first and last frame counts as a zero
    and the sum is always divided by 3. Done as a shift-and-sum on folded frames: no transpose to
    (B, C, T, H, W), and on CPU far cheaper than ``F.avg_pool3d`` (a prototype's training step went
    from 2.5x to 1.3x TSN's time with this change); its backward is the same pooling of the gradient
    (``_TemporalAvgPool3``).

    Args:
        frames: ``(B*T, C, H, W)``, clip-major, frame-minor.
        num_frames: T.

    Returns:
        ``(B*T, C, H, W)``.
    """
    if frames.shape[0] % num_frames:
        raise ValueError(f"temporal_avg_pool3: {frames.shape[0]} frames is not a whole number of "
                         f"{num_frames}-frame clips")
    return _TemporalAvgPool3.apply(frames, num_frames)


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """An eval-mode BatchNorm as the per-channel affine map ``bn(x) = x * scale + shift``, both ``(C,)``.

    The same terms as PyTorch's own inference kernel: ``scale = weight / sqrt(running_var + eps)``,
    ``shift = bias - running_mean * scale``.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def aggregate_filter(bn: nn.BatchNorm2d, pool_bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 7's two eval-mode BNs as one per-channel temporal 3-tap filter: ``(centre, neighbour, shift)``.

    With running statistics both BNs are per-channel affine maps, ``bn(y) = s1 y + b1`` and
    ``pool_bn(p) = s2 p + b2``, so for frame t (neighbours outside the clip are zero)

        ``bn(y)_t + pool_bn(pool(y))_t = (s1 + s2/3) y_t + (s2/3) (y_{t-1} + y_{t+1}) + (b1 + b2)``

    exactly. Each of the three is shaped ``(1, 1, C, 1, 1)`` to broadcast over ``(B, T, C, H, W)``.
    """
    scale1, shift1 = _bn_scale_shift(bn)
    scale2, shift2 = _bn_scale_shift(pool_bn)
    neighbour_weight = (scale2 / 3.0).view(1, 1, -1, 1, 1)  # (C,) -> (1, 1, C, 1, 1)
    centre_weight = (scale1 + scale2 / 3.0).view(1, 1, -1, 1, 1)
    shift = (shift1 + shift2).view(1, 1, -1, 1, 1)
    return centre_weight, neighbour_weight, shift


def aggregate_relu_inference(
    out: Tensor, num_frames: int, bn: nn.BatchNorm2d, pool_bn: nn.BatchNorm2d,
    filter_taps: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """``relu(bn(out) + pool_bn(temporal_avg_pool3(out)))`` (eq. 7) for eval-mode BNs, in 4 passes.

    The two BNs and the pooling are one temporal 3-tap filter per channel (``aggregate_filter``):
    one multiply-add over ``out``, one per neighbour and the ReLU, instead of BN1, the pooling
    (3 passes), BN2, the sum and the ReLU. Only the rounding differs from the plain path. No
    autograd graph is meant to go through it (``_TemporalParts`` uses it with autograd off).

    Args:
        out: ``(B*T, C, H, W)`` conv output, clip-major, frame-minor.
        num_frames: T.
        bn, pool_bn: BN1 and BN2 of eq. 7, in eval mode.
        filter_taps: ``aggregate_filter(bn, pool_bn)`` if the caller keeps it; computed when None.

    Returns:
        ``(B*T, C, H, W)``, in the memory format of ``out``.
    """
    centre_weight, neighbour_weight, shift = filter_taps or aggregate_filter(bn, pool_bn)
    clips = out.reshape(-1, num_frames, *out.shape[1:])  # (B*T, C, H, W) -> (B, T, C, H, W)
    result = torch.addcmul(shift, clips, centre_weight)  # (B, T, C, H, W)
    result[:, 1:].addcmul_(clips[:, :-1], neighbour_weight)  # frame t gets frame t-1
    result[:, :-1].addcmul_(clips[:, 1:], neighbour_weight)  # frame t gets frame t+1
    return torch.relu_(result).reshape(out.shape)  # (B, T, C, H, W) -> (B*T, C, H, W)


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``bn(conv(x))`` for an eval-mode BN as one conv: ``(weight (Cout, Cin, kh, kw), bias (Cout,))``.

    The BN is ``y * scale + shift`` per output channel (``_bn_scale_shift``), so the conv's weight
    is scaled per output channel and the shift becomes its bias (the conv's own bias, if any, scaled
    too). The weight keeps the conv weight's memory format. Only the rounding differs.
    """
    scale, shift = _bn_scale_shift(bn)
    weight = conv.weight * scale.view(-1, 1, 1, 1)  # (Cout, Cin, kh, kw) * (Cout, 1, 1, 1)
    bias = shift if conv.bias is None else shift + conv.bias * scale
    return weight, bias


def _bn_is_folded(fast_inference: bool, bn: nn.BatchNorm2d) -> bool:
    """Whether the inference rewrites may replace ``bn``: autograd off, eval mode, running statistics."""
    return (fast_inference and not torch.is_grad_enabled() and not bn.training
            and bn.track_running_stats and bn.running_var is not None)


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


def conv_bn(x: Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, folded: DerivedTensors, fast_inference: bool) -> Tensor:
    """``bn(conv(x))``; on the inference path one conv with ``bn`` folded into it (``fold_bn_into_conv``),
    the folding kept in ``folded`` until a weight changes. Saves a pass over the conv's output.

    A conv or BN with forward hooks (feature probes, visualisation) runs as its modules, unfolded,
    so that the hooks see what they were registered for.
    """
    if not _bn_is_folded(fast_inference, bn) or _has_hooks(conv) or _has_hooks(bn):
        return bn(conv(x))
    sources = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    if conv.bias is not None:
        sources += (conv.bias,)
    weight, bias = folded.get(sources, lambda: fold_bn_into_conv(conv, bn))
    return conv._conv_forward(x, weight, bias)


def _batch_norm(channels: int, zero_init: bool = False) -> nn.BatchNorm2d:
    """BatchNorm over folded frames: per channel over B, T, H, W, the same as the official BatchNorm3d."""
    bn = nn.BatchNorm2d(channels)
    if zero_init:
        nn.init.zeros_(bn.weight)
        nn.init.zeros_(bn.bias)
    return bn


class _TemporalParts:
    """Mixin for blocks: builds and runs the spatial 3x3 conv with its optional TAda parts.

    A block calls ``_build_spatial(...)`` once and ``_spatial_forward(...)`` in ``forward``; the
    conv and its BN keep the block's own torchvision names, ``route`` and ``pool_bn`` are added
    (``None`` when switched off).

    ``fast_inference`` (default True) lets a block take the inference path when autograd is off
    and its BNs are in eval mode: the route function runs with its BN folded, the calibration
    scales a scratch input in place and eq. 7 runs as ``aggregate_relu_inference`` with the filter
    kept in ``aggregate_taps``. All are exact rewrites (only the rounding differs); switching it
    off (``TAda2D.set_fast_inference(False)``) runs the plain path, which the tests compare with.
    """

    fast_inference: bool = True

    def _build_spatial(
        self, in_channels: int, out_channels: int, stride: int, adaptive: bool, aggregate: bool,
        route_reduction: int, route_kernels: tuple[int, int],
    ) -> tuple[nn.Module, nn.BatchNorm2d]:
        if adaptive:
            conv = TAdaConv2d(
                in_channels, out_channels, 3, stride=stride, padding=1, bias=False, cal_dim="cin"
            )
            self.route = RouteFunction(in_channels, route_reduction, route_kernels)
        else:
            conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
            self.route = None
        # BN2 of eq. 7, zero-initialised so the aggregation branch starts switched off.
        self.pool_bn = _batch_norm(out_channels, zero_init=True) if aggregate else None
        self.aggregate_taps = DerivedTensors()  # the inference path's aggregate_filter
        self.folded_spatial = DerivedTensors()  # a plain conv's BN folded into it (conv_bn)
        return conv, _batch_norm(out_channels)

    def _spatial_forward(
        self, x: Tensor, num_frames: int, conv: nn.Module, bn: nn.BatchNorm2d, x_is_scratch: bool = False
    ) -> Tensor:
        """``(B*T, Cin, H, W)`` -> ``(B*T, Cout, H', W')``: conv -> BN (+ BN2(temporal pool)) -> ReLU.

        ``x_is_scratch``: the caller no longer needs ``x``, so the inference path may overwrite it.
        """
        inference = (
            self.fast_inference and not torch.is_grad_enabled() and not bn.training
            and (self.pool_bn is None or not self.pool_bn.training)
        )
        if self.route is None and self.pool_bn is None:  # a plain conv: R2D, or a stage without TAda
            return torch.relu_(conv_bn(x, conv, bn, self.folded_spatial, self.fast_inference))
        if self.route is not None:
            alpha = self.route.forward_folded(x, num_frames, inference=inference)  # (B*T, Cin, 1, 1)
            out = conv.forward_folded(x, alpha, scale_in_place=inference and x_is_scratch)
        else:
            out = conv(x)
        if self.pool_bn is None:
            return torch.relu_(bn(out))
        if inference:
            sources = (bn.weight, bn.bias, bn.running_mean, bn.running_var, self.pool_bn.weight,
                       self.pool_bn.bias, self.pool_bn.running_mean, self.pool_bn.running_var)
            taps = self.aggregate_taps.get(sources, lambda: aggregate_filter(bn, self.pool_bn))
            return aggregate_relu_inference(out, num_frames, bn, self.pool_bn, taps)
        # In place on BN2's output: BN's backward needs its input, not its output. BN1 comes last on
        # purpose: autograd runs the last-recorded consumer of `out` first, and the gradient that
        # reaches `out` first is the one the other is added into in place, which only works for a
        # fresh tensor such as BN1's gradient (not the pooling's, which comes back through Python).
        return torch.relu_(self.pool_bn(temporal_avg_pool3(out, num_frames)).add_(bn(out)))


    def _shortcut_forward(self, x: Tensor) -> Tensor:
        """The identity, or the projection ``downsample`` (conv + BN, folded on the inference path)."""
        if self.downsample is None:
            return x
        conv, bn = self.downsample
        return conv_bn(x, conv, bn, self.folded_shortcut, self.fast_inference)


class BasicBlock(_TemporalParts, nn.Module):
    """ResNet-18/34 block: 3x3 (strided; TAdaConv in a TAda stage) -> 3x3, plus the shortcut.

    Official TAda2D only defines bottlenecks; here the first 3x3 conv, the strided one as in the
    official simple block, is the adaptive one.
    """

    def __init__(
        self, in_channels: int, planes: int, stride: int, adaptive: bool, aggregate: bool,
        route_reduction: int, route_kernels: tuple[int, int],
    ) -> None:
        super().__init__()
        self.conv1, self.bn1 = self._build_spatial(
            in_channels, planes, stride, adaptive, aggregate, route_reduction, route_kernels
        )
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _batch_norm(planes)
        self.downsample = _shortcut(in_channels, planes, stride)
        self.folded_bn2, self.folded_shortcut = DerivedTensors(), DerivedTensors()  # (conv_bn)

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """``(B*T, Cin, H, W)`` -> ``(B*T, planes, H/stride, W/stride)``."""
        out = self._spatial_forward(x, num_frames, self.conv1, self.bn1)
        out = conv_bn(out, self.conv2, self.bn2, self.folded_bn2, self.fast_inference)
        return torch.relu_(out + self._shortcut_forward(x))


class Bottleneck(_TemporalParts, nn.Module):
    """ResNet-50/101 block: 1x1 -> 3x3 (strided; TAdaConv in a TAda stage) -> 1x1 (x4), plus the shortcut.

    Official names: ``conv1/bn1`` = ``a/a_bn``, ``conv2/bn2`` = ``b/b_bn``, ``route`` = ``b_rf``,
    ``pool_bn`` = ``b_avgpool_bn``, ``conv3/bn3`` = ``c/c_bn``, ``downsample.0/1`` = ``short_cut(_bn)``.
    """

    def __init__(
        self, in_channels: int, planes: int, stride: int, adaptive: bool, aggregate: bool,
        route_reduction: int, route_kernels: tuple[int, int],
    ) -> None:
        super().__init__()
        out_channels = planes * EXPANSION["bottleneck"]
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = _batch_norm(planes)
        self.conv2, self.bn2 = self._build_spatial(
            planes, planes, stride, adaptive, aggregate, route_reduction, route_kernels
        )
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = _batch_norm(out_channels)
        self.downsample = _shortcut(in_channels, out_channels, stride)
        # the inference path's BN foldings (conv_bn)
        self.folded_bn1, self.folded_bn3, self.folded_shortcut = DerivedTensors(), DerivedTensors(), DerivedTensors()

    def forward(self, x: Tensor, num_frames: int) -> Tensor:
        """``(B*T, Cin, H, W)`` -> ``(B*T, 4*planes, H/stride, W/stride)``."""
        out = torch.relu_(conv_bn(x, self.conv1, self.bn1, self.folded_bn1, self.fast_inference))
        out = self._spatial_forward(out, num_frames, self.conv2, self.bn2, x_is_scratch=True)
        out = conv_bn(out, self.conv3, self.bn3, self.folded_bn3, self.fast_inference)
        return torch.relu_(out + self._shortcut_forward(x))


class _Projection(nn.Conv2d):
    """The shortcut's 1x1 (strided) conv: an ``nn.Conv2d`` (same parameters and keys) that hands a
    channels-last input of fewer than 8 channels to the CPU kernel as contiguous memory.

    oneDNN 3.12 (torch 2.13's CPU build) corrupts the heap in the backward of a channels-last 1x1
    stride-2 convolution with 2 to 7 input channels (measured on an AVX2 EPYC: abort or hang).
    Inputs are channels-last whenever clips come straight from the loader (``clips_to_tensor``
    keeps the ``(B, T, H, W, 3)`` strides, 1.2x faster to train on the CPU), so a narrow model,
    like the tiny test configuration's width 4, would meet it in its first strided shortcut.
    """

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # nn.Conv2d.forward and conv_bn (the folded weight) both come through here
        if x.device.type == "cpu" and self.in_channels < 8 and self.stride != (1, 1):
            x = x.contiguous()  # no-op unless channels-last
        return super()._conv_forward(x, weight, bias)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """1x1 strided conv + BN when the block changes shape (torchvision's ``downsample``), else None."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        _Projection(in_channels, out_channels, 1, stride=stride, bias=False), _batch_norm(out_channels)
    )


class TAda2D(nn.Module):
    """TAda2D clip classifier; with no TAda stage it is the R2D / TSN baseline.

    Args:
        depth: ResNet depth, one of 18, 34 (basic blocks), 50, 101 (bottlenecks).
        heads: head name -> number of classes, in order (e.g. ``{"label": 200}`` or
            ``{"verb": 97, "noun": 300}``); may be empty for a feature extractor.
        width: channels of the stem and of res2's 3x3 convs (64 for the real ResNet; 8 or 16 make
            tiny CPU models). Stage ``i`` has ``width * 2**i`` planes.
        num_frames: T, frames per clip; ``forward`` checks its input against it. The weights do
            not depend on T, so a model built for another T loads the same state dict.
        tada_stages: for res2..res5, whether the stage's blocks use TAdaConv (all True: TAda2D;
            all False: R2D).
        route_reduction: r of the route function (hidden channels C // r).
        route_kernels: (k0, k1) temporal kernels of the route function.
        temporal_aggregation: whether blocks with TAdaConv add the eq. 7 aggregation branch.
        dropout: dropout probability before the heads (only active in training mode).

    ``forward(video (B, 3, T, H, W)) -> (logits {head: (B, K)}, feature (B, D))``, with
    ``D = 8 * width * expansion`` (2048 for ResNet-50). Under ``torch.no_grad`` / ``inference_mode``
    in eval mode the blocks take their exact inference rewrites unless ``set_fast_inference(False)``.
    """

    def __init__(
        self,
        depth: int,
        heads: dict[str, int],
        width: int = 64,
        num_frames: int = 8,
        tada_stages: tuple[bool, bool, bool, bool] = (True, True, True, True),
        route_reduction: int = 4,
        route_kernels: tuple[int, int] = (3, 3),
        temporal_aggregation: bool = True,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"TAda2D: depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth!r}")
        if len(tuple(tada_stages)) != 4:
            raise ValueError(f"TAda2D: tada_stages needs one flag per stage res2..res5, got {tada_stages!r}")
        if width < 1 or num_frames < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"TAda2D: bad width={width}, num_frames={num_frames} or dropout={dropout}")
        for name, num_classes in heads.items():
            if not isinstance(name, str) or not name or num_classes < 1:
                raise ValueError(f"TAda2D: head {name!r} must have a non-empty name and >= 1 class")
        block_type, blocks_per_stage = RESNET_LAYOUTS[depth]
        block_class = BasicBlock if block_type == "basic" else Bottleneck
        self.depth = depth
        self.width = width
        self.num_frames = num_frames
        self.tada_stages = tuple(bool(flag) for flag in tada_stages)
        self.feature_dim = 8 * width * EXPANSION[block_type]

        # Stem: 7x7 stride 2, no max pool (res2 is strided instead).
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _batch_norm(width)
        self.fast_inference = True  # the inference rewrites (set_fast_inference)
        self.folded_stem = DerivedTensors()  # the stem's BN folded into its conv (conv_bn)
        in_channels = width
        for stage_index, (num_blocks, adaptive) in enumerate(zip(blocks_per_stage, self.tada_stages)):
            planes = width * 2**stage_index
            blocks = nn.ModuleList()
            for block_index in range(num_blocks):
                blocks.append(block_class(
                    in_channels, planes, stride=2 if block_index == 0 else 1, adaptive=adaptive,
                    aggregate=adaptive and temporal_aggregation, route_reduction=route_reduction,
                    route_kernels=tuple(route_kernels),
                ))
                in_channels = planes * EXPANSION[block_type]
            self.add_module(f"layer{stage_index + 1}", blocks)

        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(self.feature_dim, k) for name, k in heads.items()})
        self._init_weights()

    def _init_weights(self) -> None:
        """Official ResNet init: Kaiming-normal fan_out convs, BN (1, 0), heads N(0, 0.01) with zero bias.

        The route functions and the zero-initialised BN2 keep their own initialisation. TAdaConv's
        base kernel is initialised like every other conv (the official code leaves it at the
        ``nn.Conv2d`` default), so that a fresh TAda2D and R2D start from the same kernel
        distribution; with ImageNet or Kinetics weights this makes no difference.
        """
        for name, module in self.named_modules():
            if isinstance(module, (nn.Conv2d, TAdaConv2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d) and not name.endswith("pool_bn"):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def set_fast_inference(self, enabled: bool) -> None:
        """Switches the blocks' exact inference rewrites on (the default) or off (the plain path).

        Either way it drops the BN foldings the rewrites keep (``DerivedTensors``), so that it is
        also what to call after writing weights through ``tensor.data``, which they cannot see.
        """
        for module in self.modules():
            if isinstance(module, (_TemporalParts, TAda2D)):
                module.fast_inference = bool(enabled)
        clear_derived_tensors(self)

    def train(self, mode: bool = True) -> "TAda2D":
        """``nn.Module.train`` (``eval()`` too); also drops the BN foldings the inference rewrites keep.

        They are recomputed at the next inference forward. This is what makes an optimizer's fused
        step safe (``fused=True`` leaves the version counters the foldings are keyed by as they are,
        ``DerivedTensors``): a loop puts the model in eval mode before it validates.
        """
        super().train(mode)
        clear_derived_tensors(self)
        return self

    @property
    def stages(self) -> list[nn.ModuleList]:
        """res2..res5 as ``[layer1, layer2, layer3, layer4]``."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_features(self, video: Tensor) -> Tensor:
        """``(B, 3, T, H, W)`` float clip (normalised RGB) -> ``(B, D)`` pooled clip feature."""
        if video.dim() != 5 or video.shape[1] != 3 or video.shape[2] != self.num_frames:
            raise ValueError(
                f"TAda2D: input must be (B, 3, T={self.num_frames}, H, W), got {tuple(video.shape)}"
            )
        batch, channels, num_frames, height, width = video.shape
        # (B, 3, T, H, W) -> (B, T, 3, H, W) -> (B*T, 3, H, W)
        frames = video.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        # (B*T, 3, H, W) -> (B*T, width, H/2, W/2)
        x = torch.relu_(conv_bn(frames, self.conv1, self.bn1, self.folded_stem, self.fast_inference))
        for stage in self.stages:
            for block in stage:
                x = block(x, num_frames)  # res2..res5: (B*T, C_i, H/2**(i+2), W/2**(i+2))
        # (B*T, D, h, w) -> (B*T, D) -> (B, T, D) -> (B, D): average over H, W, then T.
        return x.mean(dim=(2, 3)).view(batch, num_frames, -1).mean(dim=1)

    def classify_features(self, feature: Tensor) -> dict[str, Tensor]:
        """``(B, D)`` clip (or averaged) features -> ``{head: (B, K_head)}`` logits (dropout, then linear)."""
        if feature.dim() != 2 or feature.shape[1] != self.feature_dim:
            raise ValueError(
                f"TAda2D.classify_features: feature must be (B, {self.feature_dim}), "
                f"got {tuple(feature.shape)}"
            )
        dropped = self.dropout(feature)
        return {name: head(dropped) for name, head in self.heads.items()}

    def forward(self, video: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """``(B, 3, T, H, W)`` -> ``(logits {head: (B, K)}, feature (B, D))``."""
        feature = self.forward_features(video)
        return self.classify_features(feature), feature
