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

    def forward_folded(self, frames: Tensor, alpha: Tensor) -> Tensor:
        """The same op on frames folded into the batch axis.

        Args:
            frames: ``(N, Cin, H, W)`` with ``N = B*T`` (any order, as long as ``alpha`` matches).
            alpha: ``(N, C_cal, 1, 1)``: row ``n`` calibrates the kernel used for frame ``n``.

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
            return F.conv2d(frames * alpha, self.weight, self.bias, **conv_args)
        out = F.conv2d(frames, self.weight, None, **conv_args) * alpha
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
            f"bias={self.bias is not None}, cal_dim={self.cal_dim!r}"
        )


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
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official initialisation: Kaiming-normal (fan_out) with zero bias, the last conv all zeros."""
        for layer in (self.global_linear, self.conv_reduce):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        nn.init.zeros_(self.conv_expand.weight)

    def from_descriptors(self, frame_descriptors: Tensor) -> Tensor:
        """``(B, C, T)`` per-frame spatial averages -> ``(B, C, T)`` calibration factors."""
        # The spatio-temporal mean equals the mean over frames of the spatial means (equal-size frames).
        global_descriptor = self.global_linear(frame_descriptors.mean(dim=2))  # (B, C)
        hidden = self.conv_reduce(frame_descriptors + global_descriptor.unsqueeze(2))  # (B, C/r, T)
        hidden = self.relu(self.bn(hidden))
        return self.conv_expand(hidden) + 1.0  # (B, C, T)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` features -> ``(B, C, T, 1, 1)`` alpha, the official op's layout."""
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(
                f"RouteFunction.forward: x must be (B, {self.channels}, T, H, W), got {tuple(x.shape)}"
            )
        alpha = self.from_descriptors(x.mean(dim=(3, 4)))  # (B, C, T, H, W) -> (B, C, T)
        return alpha[..., None, None]  # (B, C, T) -> (B, C, T, 1, 1)

    def forward_folded(self, frames: Tensor, num_frames: int) -> Tensor:
        """``(B*T, C, H, W)`` frames (clip-major, frame-minor) -> ``(B*T, C, 1, 1)`` alpha."""
        if frames.dim() != 4 or frames.shape[1] != self.channels or frames.shape[0] % num_frames:
            raise ValueError(
                f"RouteFunction.forward_folded: frames must be (B*{num_frames}, {self.channels}, H, W), "
                f"got {tuple(frames.shape)}"
            )
        # (B*T, C, H, W) -> (B*T, C) -> (B, T, C) -> (B, C, T)
        descriptors = frames.mean(dim=(2, 3)).view(-1, num_frames, self.channels).transpose(1, 2)
        alpha = self.from_descriptors(descriptors)
        # (B, C, T) -> (B, T, C) -> (B*T, C, 1, 1)
        return alpha.transpose(1, 2).reshape(-1, self.channels, 1, 1)
