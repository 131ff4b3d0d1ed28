"""The BM map's conventions, shared by the model, the targets and post-processing (numpy only).

A BM map scores every proposal of a sequence of ``T`` feature steps by its
duration and start step. This module states the axis order once, says which
cells are valid, and names the two confidence channels of BMN's output.
"""

import numpy as np

# The BM map's axis order, used by every map in this package (confidence maps,
# IoU targets, valid masks): ``map[d, s]`` is the proposal that starts at feature
# step ``s`` and covers the ``d + 1`` steps ``s .. s + d``; in normalised time
# (T steps = [0, 1]) it spans ``[s / T, (s + d + 1) / T]``. Shape ``(D, T)`` with
# ``D`` the number of durations (``max_duration``, ``T`` by default).
BM_MAP_AXES = ("duration", "start")

# channel index of each confidence map in BMN's output (B, 2, D, T)
REGRESSION_MAP = 0  # trained on each cell's IoU with the ground truth
CLASSIFICATION_MAP = 1  # trained on IoU > 0.9 or not


def bm_cell_steps(temporal_scale: int, max_duration: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of every BM map cell, in feature steps.

    Returns ``(start_step, end_step)``, two int64 arrays of shape ``(D, T)``:
    ``start_step[d, s] = s`` and ``end_step[d, s] = s + d + 1``, the exclusive end
    (the proposal covers steps ``start_step .. end_step - 1``). Divide by ``T``
    for normalised time.
    """
    num_durations = check_scale(temporal_scale, max_duration)
    duration_index = np.arange(num_durations)[:, None]  # (D, 1)
    start_index = np.arange(temporal_scale)[None, :]  # (1, T)
    start_step = np.broadcast_to(start_index, (num_durations, temporal_scale)).copy()  # (D, T)
    end_step = start_index + duration_index + 1  # (D, T)
    return start_step, end_step


def bm_valid_mask(temporal_scale: int, max_duration: int | None = None) -> np.ndarray:
    """Boolean ``(D, T)`` mask of the cells whose proposal ends inside the sequence (``s + d <= T - 1``)."""
    _, end_step = bm_cell_steps(temporal_scale, max_duration)
    return end_step <= temporal_scale


def check_scale(temporal_scale: int, max_duration: int | None) -> int:
    """Validates T and D; returns D."""
    if int(temporal_scale) != temporal_scale or temporal_scale < 1:
        raise ValueError(f"BM map: temporal_scale must be a positive integer, got {temporal_scale!r}")
    if max_duration is None:
        return int(temporal_scale)
    if int(max_duration) != max_duration or not 1 <= max_duration <= temporal_scale:
        raise ValueError(
            f"BM map: max_duration must be an integer in [1, temporal_scale={temporal_scale}], got {max_duration!r}"
        )
    return int(max_duration)
