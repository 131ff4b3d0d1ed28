"""Temporally-adaptive 2D convolution (TAdaConv, Huang et al., ICLR 2022, section 3.2) and its route function.

A TAdaConv applies, to frame t of a clip, the kernel ``W_t = alpha_t * W_b``: one base kernel ``W_b``
shared by all frames, calibrated per frame by a factor ``alpha_t`` that the route function computes
from the clip itself (eqs. 3-6). The calibration is per channel: along the kernel's input channels
(``cal_dim="cin"``, the paper's default) or along its output channels (``cal_dim="cout"``).

The cheap exact form used here
------------------------------
A 2D convolution is linear in its kernel and in its input. With ``y[o] = sum_i W[o, i] * x[i]``
(``*`` the spatial correlation, bias aside):

* calibrating the kernel along Cin, ``W_t[o, i] = alpha_t[i] * W_b[o, i]``, gives
  ``y_t[o] = sum_i W_b[o, i] * (alpha_t[i] * x_t[i])``: the same as scaling input channel ``i`` of
  frame ``t`` by ``alpha_t[i]`` and then running the ordinary convolution with ``W_b``;
* calibrating along Cout, ``W_t[o, i] = alpha_t[o] * W_b[o, i]``, gives
  ``y_t[o] = alpha_t[o] * sum_i W_b[o, i] * x_t[i]``: the ordinary convolution, then scaling
  output channel ``o`` of frame ``t`` (a bias, if any, is added after the scaling, as in the
  official op where the bias is not calibrated).

So every frame of every clip goes through one batched ``F.conv2d`` with the shared kernel plus one
elementwise multiply, instead of the official op's grouped convolution with one materialised kernel
per frame (``B*T*Cout*Cin*kh*kw`` numbers: 2.4 GB of float32 at res5 for a batch of 32 clips of 8
frames, plus as much again for its gradient). Forward time on CPU at batch 1 is about the same for
both forms (``bench/tadaconv.py``); the saving is memory, and the ordinary batched convolution is
the one the convolution libraries are tuned for at training batch sizes.

With ``groups > 1`` and ``cal_dim="cin"``, the official op broadcasts an alpha of ``Cin / groups``
channels over the kernel's input axis, so input channel ``j`` of every group shares factor ``j``.
``alpha`` may have that size (official semantics) or the full ``Cin`` (one factor per input
channel); the two coincide when ``groups == 1``.

Parameter layout
----------------
``TAdaConv2d.weight`` is shaped like an ``nn.Conv2d`` weight, ``(Cout, Cin / groups, kh, kw)``, so
ImageNet ResNet kernels load 1:1. The official release stores it as ``[1, 1, Cout, Cin / groups,
kh, kw]`` and its bias as ``[1, 1, Cout]``; ``backbone.weights`` reshapes between the two (the
leading singleton axes only broadcast over batch and time).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CAL_DIMS = ("cin", "cout")


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Turns an int or a 2-sequence into a pair of ints, raising on anything else."""
    if isinstance(value, int):
        return (value, value)
    pair = tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"TAdaConv2d: {name} must be an int or a pair of ints, got {value!r}")
    return pair


class _ScaleChannels(torch.autograd.Function):
    """``frames * alpha`` for ``frames (N, C, H, W)`` and ``alpha (N, C, 1, 1)``, with a leaner backward.

    The gradients are ``grad * alpha`` for the frames and ``sum over H, W of grad * frames`` for alpha.
    Autograd's own multiply allocates a full-size tensor for each; here the product for alpha is formed
    first and its buffer then receives the frames' gradient, so one allocation the size of the
    TAdaConv input goes per block and step (above glibc's mmap threshold, 32 MB, every such allocation
    is fresh pages: about 20 ms each in res2's first block at 8 clips of 8x112x112). Same values.
    """

    @staticmethod
    def forward(ctx, frames: Tensor, alpha: Tensor) -> Tensor:
        ctx.save_for_backward(frames, alpha)
        return frames * alpha

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        frames, alpha = ctx.saved_tensors
        frames_needs_grad, alpha_needs_grad = ctx.needs_input_grad
        if torch.is_grad_enabled():  # create_graph=True: stay differentiable, no out= buffers
            return (grad * alpha if frames_needs_grad else None,
                    (grad * frames).sum(dim=(2, 3), keepdim=True) if alpha_needs_grad else None)
        grad_alpha = None
        buffer = None
        if alpha_needs_grad:
            buffer = torch.mul(grad, frames)  # (N, C, H, W)
            grad_alpha = buffer.sum(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        grad_frames = None
        if frames_needs_grad:
            if buffer is not None and buffer.dtype == torch.result_type(grad, alpha):
                grad_frames = torch.mul(grad, alpha, out=buffer)
            else:
                grad_frames = grad * alpha
        return grad_frames, grad_alpha


class TAdaConv2d(nn.Module):
    """Temporally-adaptive 2D convolution, frame by frame with per-frame calibrated kernels.

    Args:
        in_channels: input channels Cin.
        out_channels: output channels Cout.
        kernel_size: spatial kernel size (kh, kw) or one int.
        stride, padding, dilation: spatial, as in ``nn.Conv2d`` (there is no temporal kernel,
            stride or padding: each frame is convolved on its own).
        groups: channel groups, as in ``nn.Conv2d``.
        bias: whether to add a per-output-channel bias (never calibrated). The official TAda2D
            uses no bias.
        cal_dim: ``"cin"`` calibrates the kernel's input channels, ``"cout"`` its output channels.

    Inputs of ``forward``: ``x (B, Cin, T, H, W)`` and ``alpha (B, C_cal, T, 1, 1)``, as in the
    official op; ``C_cal`` is Cin (or Cin / groups) for ``"cin"``, Cout for ``"cout"``.
    ``forward_folded`` takes frames already folded into the batch, which is how TAda2D keeps them.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = False,
        cal_dim: str = "cin",
    ) -> None:
        super().__init__()
        if cal_dim not in CAL_DIMS:
            raise ValueError(f"TAdaConv2d: cal_dim must be one of {CAL_DIMS}, got {cal_dim!r}")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"TAdaConv2d: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must both be divisible by groups ({groups})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        self.groups = groups
        self.cal_dim = cal_dim
        # Base kernel W_b, (Cout, Cin / groups, kh, kw); official layout [1, 1, Cout, Cin / groups, kh, kw].
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The ``nn.Conv2d`` default initialisation (also the official op's)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def _check_alpha_channels(self, num_alpha_channels: int) -> None:
        if self.cal_dim == "cout":
            allowed = {self.out_channels}
        else:
            allowed = {self.in_channels, self.in_channels // self.groups}
        if num_alpha_channels not in allowed:
            raise ValueError(
                f"TAdaConv2d(cal_dim={self.cal_dim!r}): alpha has {num_alpha_channels} channels, "
                f"expected one of {sorted(allowed)}"
            )

    def forward(self, x: Tensor, alpha: Tensor) -> Tensor:
        """Convolves each frame with its calibrated kernel.

        Args:
            x: ``(B, Cin, T, H, W)`` clip features.
            alpha: ``(B, C_cal, T, 1, 1)`` calibration factors (the route function's output).

        Returns:
            ``(B, Cout, T, H', W')``, H' and W' as for ``nn.Conv2d`` with the same settings.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"TAdaConv2d.forward: x must be (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}"
            )
        batch, channels, num_frames, height, width = x.shape
        expected_alpha = (batch, alpha.shape[1], num_frames, 1, 1)
        if alpha.dim() != 5 or tuple(alpha.shape) != expected_alpha:
            raise ValueError(
                f"TAdaConv2d.forward: alpha must be (B={batch}, C, T={num_frames}, 1, 1), "
                f"got {tuple(alpha.shape)}"
            )
        # (B, Cin, T, H, W) -> (B, T, Cin, H, W) -> (B*T, Cin, H, W)
        frames = x.transpose(1, 2).reshape(batch * num_frames, channels, height, width)
        # (B, C_cal, T, 1, 1) -> (B, T, C_cal, 1, 1) -> (B*T, C_cal, 1, 1)
        frame_alpha = alpha.transpose(1, 2).reshape(batch * num_frames, alpha.shape[1], 1, 1)
        out = self.forward_folded(frames, frame_alpha)
        # (B*T, Cout, H', W') -> (B, T, Cout, H', W') -> (B, Cout, T, H', W')
        return out.view(batch, num_frames, *out.shape[1:]).transpose(1, 2)

    def forward_folded(self, frames: Tensor, alpha: Tensor, scale_in_place: bool = False) -> Tensor:
        """The same op on frames folded into the batch axis.

        Args:
            frames: ``(N, Cin, H, W)`` with ``N = B*T`` (any order, as long as ``alpha`` matches).
            alpha: ``(N, C_cal, 1, 1)``: row ``n`` calibrates the kernel used for frame ``n``.
            scale_in_place: with ``cal_dim="cin"``, scale ``frames`` in place instead of into a new
                tensor (inference, when the caller no longer needs ``frames``: it saves allocating
                and writing one more input-sized tensor). Refused when autograd records the op.

        Returns:
            ``(N, Cout, H', W')``.
        """
        if frames.dim() != 4 or frames.shape[1] != self.in_channels:
            raise ValueError(
                f"TAdaConv2d.forward_folded: frames must be (N, {self.in_channels}, H, W), "
                f"got {tuple(frames.shape)}"
            )
        if alpha.dim() != 4 or alpha.shape[0] != frames.shape[0] or alpha.shape[2:] != (1, 1):
            raise ValueError(
                f"TAdaConv2d.forward_folded: alpha must be (N={frames.shape[0]}, C, 1, 1), "
                f"got {tuple(alpha.shape)}"
            )
        self._check_alpha_channels(alpha.shape[1])
        conv_args = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if self.cal_dim == "cin":
            if alpha.shape[1] != self.in_channels:
                # Official grouped semantics: factor j is shared by input channel j of every group.
                # (N, Cin/groups, 1, 1) -> (N, Cin, 1, 1), channel g*Cin/groups + j <- factor j
                alpha = alpha.repeat(1, self.groups, 1, 1)
            if scale_in_place:
                if torch.is_grad_enabled() and (frames.requires_grad or alpha.requires_grad):
                    raise ValueError("TAdaConv2d.forward_folded: scale_in_place needs autograd off "
                                     "(the scaling's backward needs the unscaled frames)")
                return F.conv2d(frames.mul_(alpha), self.weight, self.bias, **conv_args)
            return F.conv2d(_ScaleChannels.apply(frames, alpha), self.weight, self.bias, **conv_args)
        out = _ScaleChannels.apply(F.conv2d(frames, self.weight, None, **conv_args), alpha)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, cal_dim={self.cal_dim!r}"
        )


class _SpatialMean(torch.autograd.Function):
    """``frames.mean(dim=(2, 3))`` for ``(N, C, H, W)`` frames, with a gradient that stays a broadcast view.

    Autograd's own mean backward writes its gradient out at full size (``grad / (H*W)`` expanded,
    then divided element by element), one more pass and allocation the size of the TAdaConv input
    per block and step. Here the gradient is divided at ``(N, C)`` size and expanded without a copy;
    autograd adds it into the calibration's gradient for the same tensor. Same values, bit for bit.
    """

    @staticmethod
    def forward(ctx, frames: Tensor) -> Tensor:
        ctx.frame_shape = frames.shape
        return frames.mean(dim=(2, 3))  # (N, C, H, W) -> (N, C)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        num, channels, height, width = ctx.frame_shape
        # (N, C) -> (N, C, 1, 1) -> (N, C, H, W), a stride-0 view
        return (grad / (height * width))[:, :, None, None].expand(num, channels, height, width)


def _temporal_windows(frames: Tensor, kernel: int) -> Tensor:
    """``(B, T, C)`` frame rows -> ``(B*T, C*k)``: row ``(b, t)`` holds frames t - k//2 .. t + k//2.

    Zero beyond the clip's ends (k // 2 padding on each side), channel-major like a ``Conv1d``
    weight's ``(C_out, C_in, k)`` layout, so that ``windows @ weight.reshape(C_out, -1).T`` is the
    convolution along time.
    """
    batch, num_frames, channels = frames.shape
    # (B, T, C) -> (B, C, T) -> (B, C, T + k - 1), zero-padded -> (B, C, T, k) windows (a view)
    windows = F.pad(frames.transpose(1, 2), (kernel // 2, kernel // 2)).unfold(2, kernel, 1)
    # (B, C, T, k) -> (B, T, C, k) -> (B*T, C*k)
    return windows.permute(0, 2, 1, 3).reshape(batch * num_frames, channels * kernel)


def _temporal_conv(frames: Tensor, conv: nn.Conv1d) -> Tensor:
    """``conv`` along time on ``frames (B, T, C_in)`` -> ``(B, T, C_out)``, written as one matmul.

    The same as ``conv(frames.transpose(1, 2)).transpose(1, 2)`` for an odd kernel k with k // 2
    zero padding on each side. On the route function's small inputs ``F.conv1d`` opens one or two
    thread-pool regions per call (more in its backward), each of which waits for every thread; one
    matmul opens at most one, which is what counts when the cores are shared with other processes.
    """
    batch, num_frames, _ = frames.shape
    columns = _temporal_windows(frames, conv.kernel_size[0])  # (B*T, C_in*k)
    out = F.linear(columns, conv.weight.reshape(conv.out_channels, -1), conv.bias)  # (B*T, C_out)
    return out.view(batch, num_frames, -1)  # (B*T, C_out) -> (B, T, C_out)


class DerivedTensors:
    """Tensors computed from a module's parameters and buffers, kept until one of those changes.

    The inference paths fold eval-mode BatchNorms into neighbouring weights; computing the folded
    tensors on every forward would cost a dozen small ops per block, which is what they are there
    to save. ``get(sources, compute)`` returns the last result of ``compute()`` while every source
    is the same tensor (identity, storage) at the same version: ``load_state_dict``, the default
    and ``foreach`` optimizer steps, any in-place update under ``torch.no_grad``, ``.to()`` and
    replacing a parameter are all seen. Not seen by the versions: torch's fused optimizer steps
    (``fused=True``), whose kernels leave the version counters as they are, and writes through
    ``tensor.data``, which PyTorch gives a version counter of its own (``p.data.copy_(...)``).
    So the modules that keep derived tensors also drop them whenever their mode changes
    (``train()``, ``eval()``; :func:`clear_derived_tensors`): a loop that calls ``model.eval()``
    before it validates, as every training loop does, sees its new weights however the optimizer
    wrote them. After other such writes, call ``clear()``, or ``TAda2D.set_fast_inference``.

    Not a buffer: nothing of it is in the state dict.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._values: tuple[Tensor, ...] = ()

    def get(self, sources: tuple[Tensor, ...], compute) -> tuple[Tensor, ...]:
        key = tuple((id(t), t.data_ptr(), t._version, t.dtype, t.device) for t in sources)
        if key != self._key:
            with torch.no_grad():
                self._values = tuple(compute())
            self._key = key
        return self._values

    def clear(self) -> None:
        self._key, self._values = None, ()


def clear_derived_tensors(module: nn.Module) -> None:
    """Drops every :class:`DerivedTensors` held by ``module`` or any module inside it."""
    for submodule in module.modules():
        for value in vars(submodule).values():
            if isinstance(value, DerivedTensors):
                value.clear()


class RouteFunction(nn.Module):
    """Computes TAdaConv's calibration factors from the clip (paper eqs. 4-6).

    Per frame t, the descriptor ``v_t`` is the spatial average of the frame's features; the clip's
    global descriptor ``g`` is the spatio-temporal average, passed through a 1x1 (fully connected)
    layer and added to every frame's descriptor, as the official ``RouteFuncMLP`` does
    (``a(avgpool(x) + g(globalpool(x)))``). Then, along time:
    temporal conv (kernel k0, C -> C/r, bias) -> BN -> ReLU -> temporal conv (kernel k1, C/r -> C,
    no bias, zero-initialised) -> + 1. Both temporal convs pad with zeros to keep T frames.

    Because the last conv starts at zero, ``alpha`` is exactly 1 at initialisation and TAdaConv
    starts as the plain convolution (so ImageNet and R2D weights keep their meaning).

    The descriptors are tiny (``B*T`` rows of C numbers), so what this costs is the number of ops, not
    their arithmetic: the temporal convs run as one matmul each on frame rows (``_temporal_conv``;
    the ``nn.Conv1d`` modules hold the weights), the hidden BN in eval mode as its affine map, and the
    spatial mean passes its gradient as a broadcast view (``_SpatialMean``). With autograd off and
    the BN in eval mode, ``forward_folded(..., inference=True)`` goes further: the BN is folded into
    the reducing conv's weights and bias, the ``+ 1`` into the expanding matmul, so the rows pass
    through three matmuls and a ReLU (``_inference_rows``; the folded weights are kept in a
    ``DerivedTensors`` until a parameter changes). Only the rounding differs.

    Args:
        channels: C, channels of the features read (those of the TAdaConv's input for ``cin``).
        reduction: r, channel reduction in the hidden layer (``C // r`` hidden channels).
        kernels: (k0, k1), odd temporal kernel sizes of the two temporal convs.
        bn_eps, bn_momentum: of the hidden BatchNorm.

    Submodules and their official names (in ``b_rf``): ``global_linear`` = ``g``,
    ``conv_reduce`` = ``a``, ``bn`` = ``bn``, ``conv_expand`` = ``b``.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 4,
        kernels: tuple[int, int] = (3, 3),
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        kernels = tuple(kernels)
        if len(kernels) != 2 or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"RouteFunction: kernels must be two odd positive ints, got {kernels!r}")
        hidden = channels // reduction
        if reduction < 1 or hidden < 1:
            raise ValueError(
                f"RouteFunction: channels // reduction must be >= 1, got channels={channels}, "
                f"reduction={reduction}"
            )
        self.channels = channels
        self.global_linear = nn.Linear(channels, channels)
        self.conv_reduce = nn.Conv1d(channels, hidden, kernels[0], padding=kernels[0] // 2)
        self.bn = nn.BatchNorm1d(hidden, eps=bn_eps, momentum=bn_momentum)
        self.relu = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv1d(hidden, channels, kernels[1], padding=kernels[1] // 2, bias=False)
        self.folded = DerivedTensors()  # the inference path's folded weights
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan_out) with zero bias, the last conv all zeros."""
        for layer in (self.global_linear, self.conv_reduce):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.zeros_(self.conv_expand.weight)

    def train(self, mode: bool = True) -> "RouteFunction":
        """``nn.Module.train``; also drops the folded weights (see :class:`DerivedTensors`)."""
        super().train(mode)
        self.folded.clear()
        return self

    def from_descriptors(self, frame_descriptors: Tensor) -> Tensor:
        """``(B, C, T)`` per-frame spatial averages -> ``(B, C, T)`` calibration factors."""
        # (B, C, T) -> (B, T, C) -> alpha (B, T, C) -> (B, C, T)
        return self.from_frame_rows(frame_descriptors.transpose(1, 2)).transpose(1, 2)

    def from_frame_rows(self, descriptors: Tensor) -> Tensor:
        """The same on ``(B, T, C)`` descriptors (one row per frame) -> ``(B, T, C)`` alpha."""
        # The spatio-temporal mean equals the mean over frames of the spatial means (equal-size frames).
        global_descriptor = self.global_linear(descriptors.mean(dim=1))  # (B, C)
        hidden = _temporal_conv(descriptors + global_descriptor.unsqueeze(1), self.conv_reduce)  # (B, T, C/r)
        hidden = self.relu(self._normalise_hidden(hidden))
        return _temporal_conv(hidden, self.conv_expand) + 1.0  # (B, T, C)

    def _normalise_hidden(self, hidden: Tensor) -> Tensor:
        """The hidden BatchNorm on ``(B, T, C/r)``: statistics per channel over B and T, as over (B, C/r, T).

        With running statistics (eval mode) it is applied as its per-channel affine map, a few
        elementwise ops on a tensor this small, instead of ``F.batch_norm``, which opens a thread-pool
        region per call.
        """
        if self.bn.training or not self.bn.track_running_stats:
            return self.bn(hidden.reshape(-1, hidden.shape[2])).view_as(hidden)  # (B*T, C/r) rows
        scale = self.bn.weight * torch.rsqrt(self.bn.running_var + self.bn.eps)  # (C/r,)
        return torch.addcmul(self.bn.bias - self.bn.running_mean * scale, hidden, scale)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` features -> ``(B, C, T, 1, 1)`` alpha, the official op's layout."""
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(
                f"RouteFunction.forward: x must be (B, {self.channels}, T, H, W), got {tuple(x.shape)}"
            )
        alpha = self.from_descriptors(x.mean(dim=(3, 4)))  # (B, C, T, H, W) -> (B, C, T)
        return alpha[..., None, None]  # (B, C, T) -> (B, C, T, 1, 1)

    def forward_folded(self, frames: Tensor, num_frames: int, inference: bool = False) -> Tensor:
        """``(B*T, C, H, W)`` frames (clip-major, frame-minor) -> ``(B*T, C, 1, 1)`` alpha.

        ``inference``: take the folded inference path (``_inference_rows``) where it applies,
        autograd off and the hidden BN using running statistics; otherwise ignored.
        """
        if frames.dim() != 4 or frames.shape[1] != self.channels or frames.shape[0] % num_frames:
            raise ValueError(
                f"RouteFunction.forward_folded: frames must be (B*{num_frames}, {self.channels}, H, W), "
                f"got {tuple(frames.shape)}"
            )
        inference = (inference and not torch.is_grad_enabled() and not self.bn.training
                     and self.bn.track_running_stats)
        if inference:
            # (B*T, C, H, W) -> (B*T, C) -> (B, T, C)
            alpha = self._inference_rows(frames.mean(dim=(2, 3)).view(-1, num_frames, self.channels))
        else:
            alpha = self.from_frame_rows(_SpatialMean.apply(frames).view(-1, num_frames, self.channels))
        return alpha.view(-1, self.channels, 1, 1)  # (B, T, C) -> (B*T, C, 1, 1)

    def _folded_weights(self) -> tuple[Tensor, ...]:
        """``(W_g.T, b_g, W_a'.T, b_a', W_b.T, ones)``, the eval-mode BN folded into the reducing conv.

        ``bn(conv_reduce(x)) = conv_reduce(x) * s + t`` per hidden channel, ``s = weight / sqrt(var +
        eps)``, ``t = bias - mean * s``, so the folded conv has weight ``W_a * s`` (per output row)
        and bias ``b_a * s + t``. The matmul operands are stored transposed and contiguous.
        """
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (C/r,)
        reduce_weight = self.conv_reduce.weight.reshape(self.conv_reduce.out_channels, -1)  # (C/r, C*k0)
        return (
            self.global_linear.weight.t().contiguous(),  # (C, C)
            self.global_linear.bias,  # (C,)
            (reduce_weight * scale[:, None]).t().contiguous(),  # (C*k0, C/r)
            torch.addcmul(bn.bias - bn.running_mean * scale, self.conv_reduce.bias, scale),  # (C/r,)
            self.conv_expand.weight.reshape(self.channels, -1).t().contiguous(),  # (C/r*k1, C)
            torch.ones_like(self.global_linear.bias),  # (C,): the + 1, added by the last matmul
        )

    def _inference_rows(self, descriptors: Tensor) -> Tensor:
        """``from_frame_rows`` for an eval-mode BN with autograd off, in seven ops: ``(B, T, C)`` -> alpha."""
        sources = (self.global_linear.weight, self.global_linear.bias, self.conv_reduce.weight,
                   self.conv_reduce.bias, self.bn.weight, self.bn.bias, self.bn.running_mean,
                   self.bn.running_var, self.conv_expand.weight)
        global_t, global_bias, reduce_t, reduce_bias, expand_t, ones = self.folded.get(sources, self._folded_weights)
        batch, num_frames, _ = descriptors.shape
        global_descriptor = torch.addmm(global_bias, descriptors.mean(dim=1), global_t)  # (B, C)
        context = descriptors + global_descriptor.unsqueeze(1)  # (B, T, C)
        hidden = torch.addmm(reduce_bias, _temporal_windows(context, self.conv_reduce.kernel_size[0]),
                             reduce_t).relu_()  # (B*T, C/r)
        hidden_windows = _temporal_windows(hidden.view(batch, num_frames, -1), self.conv_expand.kernel_size[0])
        return torch.addmm(ones, hidden_windows, expand_t).view(batch, num_frames, -1)  # (B, T, C)
