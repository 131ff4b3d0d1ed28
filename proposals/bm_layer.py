"""The boundary-matching (BM) layer of BMN (the map axis convention is in ``bm_map``).

BMN scores every proposal (start step, duration) of a sequence of ``T`` feature
steps at once. For each proposal the BM layer samples the feature sequence at
``num_sample`` points spread over the proposal, extended on both sides by
``prop_boundary_ratio`` of its length, so that the next layer sees the proposal
and its context. The sampling is linear interpolation, which is linear in the
features, so all proposals together are one matrix product with a constant
weight tensor built once here.

Sampling definition (in feature-step coordinates, step ``t`` sits at ``t``):

- proposal ``(d, s)`` covers steps ``s .. s + d`` (length ``d + 1`` steps);
- its sampling region is ``[s - r (d + 1), s + d + r (d + 1)]`` with
  ``r = prop_boundary_ratio``;
- ``num_sample * num_sample_perbin`` points are spaced evenly over the region,
  both ends included; consecutive groups of ``num_sample_perbin`` points form
  the ``num_sample`` bins, and a bin's value is the mean of its points;
- a point at position ``x`` takes ``(1 - frac) * f[floor(x)] + frac * f[floor(x) + 1]``
  with ``frac = x - floor(x)``; features outside ``0 .. T - 1`` count as zero
  (a tap outside the sequence contributes nothing);
- invalid cells (``s + d > T - 1``, the proposal runs past the end) get all-zero
  weights.

This follows the original BMN code (JJBOY/BMN-Boundary-Matching-Network,
mmaction2) except at the left border: the original splits a point with
``math.modf``, which truncates towards zero, so a point in ``(-1, 0)`` puts its
whole weight on step 0; here it is zero-padded like the right border.

Two modules apply the weights: ``BoundaryMatchingLayer`` builds the sampled map
``(B, C, N, D, T)`` with one dense matmul (the original order, BMN's
``formulation="materialised"``), and ``BoundaryMatchingConv`` computes the sampling
together with the convolution BMN applies to the sampled map, through a sparse
product, without building the map (BMN's default).
"""

import warnings

import torch
from torch import nn

from proposals.bm_map import BM_MAP_AXES, bm_cell_steps, bm_valid_mask, check_scale

__all__ = [
    "BM_MAP_AXES",
    "BoundaryMatchingConv",
    "BoundaryMatchingLayer",
    "bm_cell_steps",
    "bm_valid_mask",
    "boundary_matching_entries",
    "boundary_matching_weights",
]


def boundary_matching_entries(
    temporal_scale: int,
    num_sample: int = 32,
    num_sample_perbin: int = 3,
    prop_boundary_ratio: float = 0.5,
    max_duration: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The non-zero BM sampling weights, each ``(t, n, d, s)`` once.

    Returns ``(feature_step, bin_index, duration, start, weight)``: four int64 index
    tensors and the float32 weights, all of shape ``(E,)``, sorted by ``(t, n, d, s)``;
    ``weight`` is the ``weights[t, n, d, s]`` of ``boundary_matching_weights``.
    Built without a loop over proposals: every sample point's position is computed at
    once, and the taps that land on the same entry (several points of a bin between
    the same two steps) are summed in float64 before the one rounding to float32.
    """
    num_durations = check_scale(temporal_scale, max_duration)
    if num_sample < 1 or num_sample_perbin < 1 or num_sample * num_sample_perbin < 2:
        raise ValueError(
            f"BM layer: need num_sample >= 1, num_sample_perbin >= 1 and at least 2 points per proposal, "
            f"got num_sample={num_sample}, num_sample_perbin={num_sample_perbin}"
        )
    if not prop_boundary_ratio >= 0:
        raise ValueError(f"BM layer: prop_boundary_ratio must be >= 0, got {prop_boundary_ratio}")
    num_points = num_sample * num_sample_perbin

    duration_index = torch.arange(num_durations, dtype=torch.float64)[:, None]  # (D, 1)
    start_index = torch.arange(temporal_scale, dtype=torch.float64)[None, :]  # (1, T)
    length = duration_index + 1.0  # (D, 1) steps covered by the proposal
    region_start = start_index - prop_boundary_ratio * length  # (D, T)
    region_end = start_index + duration_index + prop_boundary_ratio * length  # (D, T)
    spacing = (region_end - region_start) / (num_points - 1)  # (D, T)
    point_index = torch.arange(num_points, dtype=torch.float64)  # (P,)
    # (D, T, 1) + (D, T, 1) * (P,) -> (D, T, P) -> (D, T, N, K) with P = N * K
    positions = region_start[..., None] + spacing[..., None] * point_index
    positions = positions.reshape(num_durations, temporal_scale, num_sample, num_sample_perbin)

    lower = torch.floor(positions)  # (D, T, N, K)
    frac = positions - lower  # (D, T, N, K)
    lower = lower.long()
    # index grids for the (d, s, n) of every point, broadcast to (D, T, N, K)
    d_grid = torch.arange(num_durations)[:, None, None, None].expand_as(lower)
    s_grid = torch.arange(temporal_scale)[None, :, None, None].expand_as(lower)
    n_grid = torch.arange(num_sample)[None, None, :, None].expand_as(lower)
    cell_valid = torch.from_numpy(bm_valid_mask(temporal_scale, max_duration))[:, :, None, None]  # (D, T, 1, 1)

    tap_keys, tap_weights = [], []
    for tap_step, tap_weight in ((lower, 1.0 - frac), (lower + 1, frac)):
        keep = (tap_step >= 0) & (tap_step <= temporal_scale - 1) & cell_valid  # (D, T, N, K)
        # flat index into a (T_feature, N, D, T_start) array, so that sorting sorts by (t, n, d, s)
        flat = ((tap_step * num_sample + n_grid) * num_durations + d_grid) * temporal_scale + s_grid
        tap_keys.append(flat[keep])
        tap_weights.append(tap_weight[keep] / num_sample_perbin)
    # (taps,) -> (E,) distinct entries, sorted; each entry the float64 sum of its taps
    keys, entry_of_tap = torch.unique(torch.cat(tap_keys), return_inverse=True)
    weights = torch.zeros(len(keys), dtype=torch.float64).index_add_(0, entry_of_tap, torch.cat(tap_weights))

    keep = weights != 0  # a tap at exactly a feature step leaves its neighbour a zero weight
    keys, weights = keys[keep], weights[keep]
    start = keys % temporal_scale
    duration = keys // temporal_scale % num_durations
    bin_index = keys // (temporal_scale * num_durations) % num_sample
    feature_step = keys // (temporal_scale * num_durations * num_sample)
    return feature_step, bin_index, duration, start, weights.float()


def boundary_matching_weights(
    temporal_scale: int,
    num_sample: int = 32,
    num_sample_perbin: int = 3,
    prop_boundary_ratio: float = 0.5,
    max_duration: int | None = None,
) -> torch.Tensor:
    """The BM sampling weights, float32 of shape ``(T, num_sample, D, T)``.

    ``weights[t, n, d, s]`` is how much feature step ``t`` contributes to bin ``n``
    of proposal ``(d, s)`` (definition in the module docstring), so that
    ``sampled[c, n, d, s] = sum_t features[c, t] * weights[t, n, d, s]``.
    The dense form of ``boundary_matching_entries`` (same numbers); at most a few
    per cent of it is non-zero.
    """
    num_durations = check_scale(temporal_scale, max_duration)
    feature_step, bin_index, duration, start, weight = boundary_matching_entries(
        temporal_scale, num_sample, num_sample_perbin, prop_boundary_ratio, max_duration
    )
    weights = torch.zeros(temporal_scale, num_sample, num_durations, temporal_scale, dtype=torch.float32)
    weights[feature_step, bin_index, duration, start] = weight
    return weights


class BoundaryMatchingLayer(nn.Module):
    """Samples every proposal of the BM map from a feature sequence, as one matmul.

    Args:
        temporal_scale: T, the number of feature steps of the input sequence.
        num_sample: bins sampled per proposal (N); 32 in BMN.
        num_sample_perbin: interpolated points averaged per bin; 3 in BMN.
        prop_boundary_ratio: context added on each side, as a fraction of the
            proposal length; 0.5 in BMN.
        max_duration: D, the number of proposal durations (1 .. D steps);
            ``None`` means T, all durations.

    ``forward(features (B, C, T)) -> (B, C, N, D, T)`` with the BM map axes
    ``(duration, start)`` last (``BM_MAP_AXES``).
    """

    def __init__(
        self,
        temporal_scale: int,
        num_sample: int = 32,
        num_sample_perbin: int = 3,
        prop_boundary_ratio: float = 0.5,
        max_duration: int | None = None,
    ):
        super().__init__()
        self.temporal_scale = temporal_scale
        self.num_sample = num_sample
        self.num_durations = check_scale(temporal_scale, max_duration)
        weights = boundary_matching_weights(
            temporal_scale, num_sample, num_sample_perbin, prop_boundary_ratio, max_duration
        )
        # (T, N, D, T) -> (T, N*D*T): one matrix applied to the time axis; a constant,
        # not a parameter, and rebuilt from the arguments rather than saved in checkpoints.
        self.register_buffer("sample_weights", weights.reshape(temporal_scale, -1), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() != 3 or features.shape[-1] != self.temporal_scale:
            raise ValueError(
                f"BoundaryMatchingLayer expects features (B, C, T={self.temporal_scale}), "
                f"got shape {tuple(features.shape)}"
            )
        batch, channels, _ = features.shape
        # (B, C, T) @ (T, N*D*T) -> (B, C, N*D*T)
        sampled = torch.matmul(features, self.sample_weights.to(features.dtype))
        # (B, C, N*D*T) -> (B, C, N, D, T)
        return sampled.view(batch, channels, self.num_sample, self.num_durations, self.temporal_scale)


class BoundaryMatchingConv(nn.Module):
    """The BM layer and the convolution over its samples in one step, without the sampled map.

    BMN follows the BM layer with a 3D convolution whose kernel and stride span the
    ``N`` samples of a proposal:
    ``out[o, d, s] = bias[o] + sum_{c, n} weight[o, c, n] * sampled[c, n, d, s]`` with
    ``sampled[c, n, d, s] = sum_t features[c, t] * weights[t, n, d, s]``. Both are linear,
    so this module computes them the other way round:

    1. ``projected[t, n, o] = sum_c weight[o, c, n] * features[c, t]``: one matmul at every
       feature step, ``(B, T, N, O)``: ``N`` times the output channels, but at ``T`` steps
       instead of ``D x T`` proposals;
    2. ``out[d, s, o] = bias[o] + sum_{t, n} weights[t, n, d, s] * projected[t, n, o]``: a
       product with the sampling weights stored as a sparse ``(D*T, T*N)`` CSR matrix
       (a bin reads at most ``2 * num_sample_perbin`` steps, 1.5 % of the matrix at
       T = D = 100, N = 32).

    The ``(B, C, N, D, T)`` sampled map (2.4 GiB at B = 8, C = 256, T = D = 100, N = 32) and
    its copy inside the strided convolution never exist. Same arguments as
    ``BoundaryMatchingLayer``; the module has no parameters: ``forward`` takes the
    convolution's, so that BMN keeps its ``Conv3d`` and checkpoints load unchanged.

    ``forward(features (B, C, T), weight (O, C, N, 1, 1), bias (O,) or None) -> (B, O, D, T)``,
    before any activation, equal to ``conv3d(BoundaryMatchingLayer(features), weight, bias,
    stride=(N, 1, 1)).squeeze(2)``. The result is laid out channels-last (``(B, D, T, O)``
    in memory), as the sparse product writes it; BMN's 2D convolutions after it run their
    forward + backward about 1.5x faster on that layout than on the contiguous one (CPU,
    T = 100, batch 8, measured).
    """

    def __init__(
        self,
        temporal_scale: int,
        num_sample: int = 32,
        num_sample_perbin: int = 3,
        prop_boundary_ratio: float = 0.5,
        max_duration: int | None = None,
    ):
        super().__init__()
        self.temporal_scale = temporal_scale
        self.num_sample = num_sample
        self.num_durations = check_scale(temporal_scale, max_duration)
        feature_step, bin_index, duration, start, weight = boundary_matching_entries(
            temporal_scale, num_sample, num_sample_perbin, prop_boundary_ratio, max_duration
        )
        num_cells = self.num_durations * temporal_scale
        num_taps = temporal_scale * num_sample
        cell = duration * temporal_scale + start  # (E,) row of the (D*T, T*N) matrix
        tap = feature_step * num_sample + bin_index  # (E,) its column: (t, n), the layout of `projected`
        # The sampling matrix for the forward product and its transpose for the backward one,
        # each as the three arrays of a CSR matrix; constants rebuilt from the arguments, not
        # saved in checkpoints, and plain tensors (not sparse ones) so that .to(), .double()
        # and DDP's buffer broadcast treat them like any other buffer.
        for name, rows, columns, shape in (("sampling", cell, tap, (num_cells, num_taps)),
                                           ("transposed", tap, cell, (num_taps, num_cells))):
            row_starts, column_index, values = _csr_arrays(rows, columns, weight, *shape)
            self.register_buffer(f"{name}_row_starts", row_starts, persistent=False)
            self.register_buffer(f"{name}_columns", column_index, persistent=False)
            self.register_buffer(f"{name}_values", values, persistent=False)
        self.sampling_shape = (num_cells, num_taps)

    def sparse_matrices(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sampling (D*T, T*N), transposed (T*N, D*T))``, sparse CSR tensors of ``dtype``
        on the buffers' device: ``sampling[d * T + s, t * N + n] = weights[t, n, d, s]``."""
        num_cells, num_taps = self.sampling_shape
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
            sampling = torch.sparse_csr_tensor(
                self.sampling_row_starts, self.sampling_columns, self.sampling_values.to(dtype),
                size=(num_cells, num_taps), check_invariants=False,
            )
            transposed = torch.sparse_csr_tensor(
                self.transposed_row_starts, self.transposed_columns, self.transposed_values.to(dtype),
                size=(num_taps, num_cells), check_invariants=False,
            )
        return sampling, transposed

    def forward(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if features.dim() != 3 or features.shape[-1] != self.temporal_scale:
            raise ValueError(
                f"BoundaryMatchingConv expects features (B, C, T={self.temporal_scale}), "
                f"got shape {tuple(features.shape)}"
            )
        batch, channels, _ = features.shape
        out_channels = weight.shape[0]
        if weight.shape != (out_channels, channels, self.num_sample, 1, 1):
            raise ValueError(
                f"BoundaryMatchingConv expects a weight (O, C={channels}, N={self.num_sample}, 1, 1), "
                f"got shape {tuple(weight.shape)}"
            )
        # (O, C, N, 1, 1) -> (C, N, O) -> (C, N*O): column n * O + o
        step_weight = weight.view(out_channels, channels, self.num_sample).permute(1, 2, 0)
        step_weight = step_weight.reshape(channels, self.num_sample * out_channels)
        # (B, C, T) -> (B, T, C) @ (C, N*O) -> (B, T, N*O) -> (B, T*N, O): row t * N + n
        projected = torch.matmul(features.transpose(1, 2), step_weight)
        projected = projected.view(batch, self.temporal_scale * self.num_sample, out_channels)
        sampling, transposed = self.sparse_matrices(projected.dtype)
        # (D*T, T*N) sparse @ (B, T*N, O) -> (B, D*T, O)
        out = _SparseProduct.apply(projected, sampling, transposed)
        if bias is not None:
            out.add_(bias)  # (B, D*T, O) + (O,), in place: the product's backward does not need it
        # (B, D*T, O) -> (B, D, T, O) -> (B, O, D, T), a view: channels-last memory
        return out.view(batch, self.num_durations, self.temporal_scale, out_channels).permute(0, 3, 1, 2)


def _csr_arrays(
    rows: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, num_rows: int, num_columns: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``(row_starts (R + 1,), columns (E,), values (E,))`` of a CSR matrix from distinct entries.

    Indices are int32 (the sparse products measured faster with them than with int64) unless
    the entries need more.
    """
    order = torch.argsort(rows * num_columns + columns)  # row by row, columns ascending
    row_starts = torch.zeros(num_rows + 1, dtype=torch.int64)
    row_starts[1:] = torch.cumsum(torch.bincount(rows, minlength=num_rows), dim=0)
    index_dtype = torch.int32 if max(len(values), num_columns) < 2**31 else torch.int64
    return row_starts.to(index_dtype), columns[order].to(index_dtype), values[order]


class _SparseProduct(torch.autograd.Function):
    """``matrix (R, K) @ dense[b] (K, C)`` for every batch item: ``(B, K, C) -> (B, R, C)``.

    ``matrix`` is a constant sparse CSR tensor; ``transposed`` is its transpose, also CSR, so
    the backward product ``transposed @ grad[b]`` is row by row too (no scatter, the same
    result every run). The backward is this same function, so it is differentiable again.
    """

    @staticmethod
    def forward(ctx, dense, matrix, transposed):
        ctx.matrix, ctx.transposed = matrix, transposed
        dense = dense.contiguous()
        out = dense.new_empty(dense.shape[0], matrix.shape[0], dense.shape[2])  # (B, R, C)
        # One product per item: with C = 512 columns this measured about 2x faster on CPU than
        # one product of the items side by side, (K, B*C), and 6x faster than a dense matmul
        # (bench/bmn.py). beta=0 writes the product straight into `out` (its contents are not
        # read); torch.mm(..., out=) would zero a temporary and copy it.
        for item in range(dense.shape[0]):
            torch.addmm(out[item], matrix, dense[item], beta=0, out=out[item])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _SparseProduct.apply(grad_out, ctx.transposed, ctx.matrix), None, None
