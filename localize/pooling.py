"""Pooling stored clip features over proposals (the `features` mode) and over whole videos (HACS).

A stored clip feature belongs to a proposal when its clip centre (seconds) lies inside
the proposal, ends included: ``start_sec <= centre <= end_sec``. A proposal that holds no
clip centre (shorter than the clip stride) takes the one clip whose centre is nearest its
midpoint, the earlier clip on a tie.

The ranges of all proposals come from one ``searchsorted`` each way; a proposal's clips
are then the contiguous rows ``first .. last - 1``, and its mean is one reduction over that
view, so only the rows the proposals cover are read. (Measured on an hour-long EK100 video,
N = 27,000 clips, D = 2048, 100 proposals of a few seconds: these slices take about 10 ms;
a dense ``(P, N)`` averaging matrix, ``P * N * D`` multiply-adds, 0.5 s; a float64 cumulative
sum touches all ``N * D`` values and needs 440 MB.) Whatever the pooling, the heads then run
once per video on the ``(P, D)`` result.
"""

from __future__ import annotations

import numpy as np


def _check_inputs(features: np.ndarray, times_sec: np.ndarray, segments_sec: np.ndarray) -> None:
    if features.ndim != 2:
        raise ValueError(f"pooling: features must be (N, D), got shape {features.shape}")
    if times_sec.shape != (features.shape[0],):
        raise ValueError(f"pooling: times must be (N,) = ({features.shape[0]},), got shape {times_sec.shape}")
    if features.shape[0] == 0:
        raise ValueError("pooling: the video has no clip features (N = 0)")
    if segments_sec.ndim != 2 or segments_sec.shape[1] != 2:
        raise ValueError("pooling: segments must be (P, 2) [start, end] seconds, "
                         f"got shape {segments_sec.shape}")
    if np.any(np.diff(times_sec) < 0):
        raise ValueError("pooling: clip-centre times must be in increasing order")


def proposal_clip_ranges(times_sec: np.ndarray, segments_sec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clip rows ``first .. last - 1`` pooled for each proposal.

    Args:
        times_sec: (N,) clip-centre seconds, ascending.
        segments_sec: (P, 2) proposal ``[start, end]`` seconds.

    Returns:
        ``(first (P,), last (P,))`` int64 row ranges; the nearest-clip fallback gives a range of one.
    """
    starts, ends = segments_sec[:, 0], segments_sec[:, 1]
    first = np.searchsorted(times_sec, starts, side="left")  # first centre >= start
    last = np.searchsorted(times_sec, ends, side="right")  # one past the last centre <= end
    empty = last <= first
    if np.any(empty):
        # Nearest centre to the midpoint: compare the centres on either side of it (earlier wins ties).
        middles = (starts[empty] + ends[empty]) / 2.0
        after = np.searchsorted(times_sec, middles, side="left").clip(1, len(times_sec) - 1)
        before = after - 1
        take_after = times_sec[after] - middles < middles - times_sec[before]
        nearest = np.where(take_after, after, before)
        if len(times_sec) == 1:
            nearest = np.zeros_like(nearest)
        first = first.copy()
        last = last.copy()
        first[empty], last[empty] = nearest, nearest + 1
    return first.astype(np.int64), last.astype(np.int64)


def proposal_feature_means(features: np.ndarray, times_sec: np.ndarray,
                           segments_sec: np.ndarray) -> np.ndarray:
    """Mean clip feature of every proposal (float64 sums over contiguous row ranges).

    Args:
        features: (N, D) clip features of one video, float32 (the store's ``get``).
        times_sec: (N,) their clip-centre seconds, ascending.
        segments_sec: (P, 2) proposals ``[start, end]`` in seconds.

    Returns:
        (P, D) float32 mean features (see the module docstring for which clips count).
    """
    features = np.asarray(features)
    times_sec = np.asarray(times_sec, dtype=np.float64)
    segments_sec = np.asarray(segments_sec, dtype=np.float64).reshape(-1, 2)
    _check_inputs(features, times_sec, segments_sec)
    first, last = proposal_clip_ranges(times_sec, segments_sec)
    means = np.empty((len(first), features.shape[1]), dtype=np.float32)  # (P, D)
    for row, (begin, end) in enumerate(zip(first.tolist(), last.tolist())):
        means[row] = features[begin:end].mean(axis=0, dtype=np.float64)  # a view of rows begin..end-1
    return means


def video_feature_mean(features: np.ndarray) -> np.ndarray:
    """(N, D) clip features -> (D,) float32 mean over the whole video (HACS video-level classification)."""
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"pooling: features must be (N >= 1, D), got shape {features.shape}")
    return features.astype(np.float64).mean(axis=0).astype(np.float32)
