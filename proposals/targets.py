"""BMN training targets from ground-truth segments in normalised time.

Inputs are segments ``(K, 2)`` as ``[start, end]`` fractions of the sequence
(``[0, 1]`` = the ``T`` feature steps; HACS: of the video, EK100: of the window).
Segments outside ``[0, 1]`` are clipped to it.

Time convention (shared with ``bm_map``, ``bm_layer`` and ``postprocess``): feature step
``t`` is the cell ``[t / T, (t + 1) / T]``.

- The *start* probability of step ``t`` says "an action starts at the left edge
  of step t" (time ``t / T``); its anchor region is ``[(t - 0.5) / T, (t + 0.5) / T]``.
- The *end* probability of step ``t`` says "an action ends at the right edge of
  step t" (time ``(t + 1) / T``); its anchor region is ``[(t + 0.5) / T, (t + 1.5) / T]``.
- Each ground-truth start (end) gets a boundary region of width
  ``boundary_width_steps / T`` (3 steps, as in the BMN code) centred on it.
- A step's target is the largest overlap of its anchor region with any boundary
  region, divided by the anchor length (intersection over anchor, in [0, 1]).

Variant chosen, and why: the original BMN code (JJBOY, and BSN before it) uses
the anchor ``[(t - 0.5) / T, (t + 0.5) / T]`` for both starts and ends, so an end
at step ``t`` means time ``t / T`` and proposal ``[s / T, (s + d + 1) / T]`` takes
its end score at step ``s + d + 1``; the proposals that end at the sequence end
(``s + d + 1 = T``) then have no end score and are dropped at inference.
mmaction2 widens the anchor to ``[(t - 0.5) / T, (t + 1.5) / T]`` for both.
Here the end anchor is centred on the right edge of step ``t``, so proposal
``(d, s)`` takes its start score at step ``s`` and its end score at step ``s + d``,
and every valid BM cell (``s + d <= T - 1``) has both.

The IoU-map target of cell ``(d, s)`` (proposal ``[s / T, (s + d + 1) / T]``) is
its largest temporal IoU with any ground-truth segment; invalid cells are 0.
"""

import numpy as np

from proposals.bm_map import bm_cell_steps, bm_valid_mask


def boundary_targets(
    segments: np.ndarray, temporal_scale: int, boundary_width_steps: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end targets, each float64 ``(T,)`` in [0, 1] (see the module docstring).

    Args:
        segments: ``(K, 2)`` ground truth ``[start, end]`` in normalised time; K may be 0.
        temporal_scale: T, the number of feature steps.
        boundary_width_steps: width of the region around each boundary, in steps.
    """
    segments = check_segments(segments)
    if not boundary_width_steps > 0:
        raise ValueError(f"boundary_targets: boundary_width_steps must be > 0, got {boundary_width_steps}")
    step = np.arange(temporal_scale, dtype=np.float64)  # (T,)
    start_anchors = np.stack([step - 0.5, step + 0.5], axis=1) / temporal_scale  # (T, 2)
    end_anchors = np.stack([step + 0.5, step + 1.5], axis=1) / temporal_scale  # (T, 2)
    half_width = 0.5 * boundary_width_steps / temporal_scale
    start_regions = segments[:, [0, 0]] + [-half_width, half_width]  # (K, 2)
    end_regions = segments[:, [1, 1]] + [-half_width, half_width]  # (K, 2)
    return _best_overlap_over_anchor(start_anchors, start_regions), _best_overlap_over_anchor(end_anchors, end_regions)


def iou_map_target(segments: np.ndarray, temporal_scale: int, max_duration: int | None = None) -> np.ndarray:
    """Each BM cell's best temporal IoU with the ground truth, float64 ``(D, T)``; invalid cells 0."""
    segments = check_segments(segments)
    start_step, end_step = bm_cell_steps(temporal_scale, max_duration)  # (D, T) each
    valid = bm_valid_mask(temporal_scale, max_duration)  # (D, T)
    if len(segments) == 0:
        return np.zeros(start_step.shape)
    cell_start = start_step[..., None] / temporal_scale  # (D, T, 1)
    cell_end = end_step[..., None] / temporal_scale  # (D, T, 1)
    gt_start, gt_end = segments[:, 0], segments[:, 1]  # (K,) each
    intersection = np.clip(np.minimum(cell_end, gt_end) - np.maximum(cell_start, gt_start), 0.0, None)  # (D, T, K)
    union = (cell_end - cell_start) + (gt_end - gt_start) - intersection  # (D, T, K), > 0: cells have length
    best_iou = (intersection / union).max(axis=-1)  # (D, T)
    return np.where(valid, best_iou, 0.0)


def bmn_targets(
    segments: np.ndarray,
    temporal_scale: int,
    max_duration: int | None = None,
    boundary_width_steps: float = 3.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(iou_map (D, T), start (T,), end (T,))``: all of a sequence's BMN targets, float64."""
    start, end = boundary_targets(segments, temporal_scale, boundary_width_steps)
    return iou_map_target(segments, temporal_scale, max_duration), start, end


def check_segments(segments: np.ndarray) -> np.ndarray:
    """Validates ``(K, 2)`` normalised segments and clips them to [0, 1]; returns float64."""
    segments = np.asarray(segments, dtype=np.float64)
    if segments.size == 0:
        return np.zeros((0, 2))
    if segments.ndim != 2 or segments.shape[1] != 2:
        raise ValueError(f"ground-truth segments must have shape (K, 2), got {segments.shape}")
    if not np.isfinite(segments).all():
        raise ValueError(f"ground-truth segments must be finite, rows {np.where(~np.isfinite(segments))[0]}")
    reversed_rows = np.where(segments[:, 1] < segments[:, 0])[0]
    if len(reversed_rows):
        raise ValueError(
            f"ground-truth segments must have start <= end, rows {reversed_rows.tolist()}: "
            f"{segments[reversed_rows].tolist()}"
        )
    return np.clip(segments, 0.0, 1.0)


def _best_overlap_over_anchor(anchors: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """max over regions of |anchor ∩ region| / |anchor|: anchors (T, 2), regions (K, 2) -> (T,)."""
    if len(regions) == 0:
        return np.zeros(len(anchors))
    # (T, 1) vs (K,) -> (T, K)
    overlap = np.minimum(anchors[:, 1:], regions[:, 1]) - np.maximum(anchors[:, :1], regions[:, 0])
    return np.clip(overlap, 0.0, None).max(axis=1) / (anchors[:, 1] - anchors[:, 0])
