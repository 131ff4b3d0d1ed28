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
"""

import torch
from torch import nn

from proposals.bm_map import BM_MAP_AXES, bm_cell_steps, bm_valid_mask, check_scale

__all__ = [
    "BM_MAP_AXES",
    "BoundaryMatchingLayer",
    "bm_cell_steps",
    "bm_valid_mask",
    "boundary_matching_weights",
]


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
    Built without a loop over proposals: every sample point's position is computed
    at once and its two interpolation taps are scattered with ``index_add_``.
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

    weights = torch.zeros(temporal_scale * num_sample * num_durations * temporal_scale, dtype=torch.float32)
    for tap_step, tap_weight in ((lower, 1.0 - frac), (lower + 1, frac)):
        keep = (tap_step >= 0) & (tap_step <= temporal_scale - 1) & cell_valid  # (D, T, N, K)
        # flat index into weights viewed as (T_feature, N, D, T_start)
        flat = ((tap_step * num_sample + n_grid) * num_durations + d_grid) * temporal_scale + s_grid
        weights.index_add_(0, flat[keep], (tap_weight[keep] / num_sample_perbin).float())
    return weights.view(temporal_scale, num_sample, num_durations, temporal_scale)


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
