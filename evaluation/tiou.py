"""Temporal intersection over union (tIoU) of segments, and pairs of segments that share a group.

A segment is ``[start, end]`` in seconds. The tIoU of two segments is::

    inter = max(0, min(end_a, end_b) - max(start_a, start_b))
    tiou  = inter / ((end_b - start_b) + (end_a - start_a) - inter)

with the operations in exactly this order, as the ActivityNet and EPIC-Kitchens evaluators do, so
that a tIoU which lands exactly on a threshold compares the same way here as there.

One deliberate departure: when the union is zero (a zero-length prediction against a zero-length
ground truth, or end-before-start segments whose lengths cancel) the official code divides 0 by 0,
gets NaN, and its ``tiou < threshold`` test then treats the pair as a *match*, wherever the two
segments lie. Here such a pair (and any pair whose union is not positive) has tIoU 0: no match. The
EK100 validation ground truth holds no zero-length segment, so real scores are unaffected.
"""

from __future__ import annotations

import numpy as np


def paired_tiou(segments_a: np.ndarray, segments_b: np.ndarray) -> np.ndarray:
    """tIoU of row i of ``segments_a`` with row i of ``segments_b``.

    Args:
        segments_a: ``(N, 2)`` float seconds, ``[start, end]`` per row.
        segments_b: ``(N, 2)`` float seconds.

    Returns:
        ``(N,)`` float64 tIoU in [0, 1].
    """
    segments_a = np.asarray(segments_a, dtype=np.float64)
    segments_b = np.asarray(segments_b, dtype=np.float64)
    intersection = np.clip(
        np.minimum(segments_a[:, 1], segments_b[:, 1]) - np.maximum(segments_a[:, 0], segments_b[:, 0]),
        0.0,
        None,
    )
    union = (segments_b[:, 1] - segments_b[:, 0]) + (segments_a[:, 1] - segments_a[:, 0]) - intersection
    tiou = np.zeros_like(intersection)
    positive = union > 0
    tiou[positive] = intersection[positive] / union[positive]
    return tiou


def pairwise_tiou(segments_a: np.ndarray, segments_b: np.ndarray) -> np.ndarray:
    """tIoU of every row of ``segments_a`` with every row of ``segments_b``.

    Args:
        segments_a: ``(N, 2)`` float seconds.
        segments_b: ``(M, 2)`` float seconds.

    Returns:
        ``(N, M)`` float64, entry ``[i, j]`` = tIoU(a_i, b_j).
    """
    segments_a = np.asarray(segments_a, dtype=np.float64).reshape(-1, 2)
    segments_b = np.asarray(segments_b, dtype=np.float64).reshape(-1, 2)
    num_a, num_b = len(segments_a), len(segments_b)
    # (N, 2), (M, 2) -> (N*M, 2) each, row i*M + j pairing a_i with b_j
    flat_a = np.repeat(segments_a, num_b, axis=0)
    flat_b = np.tile(segments_b, (num_a, 1))
    # (N*M,) -> (N, M)
    return paired_tiou(flat_a, flat_b).reshape(num_a, num_b)


def overlapping_pairs(
    group_of_a: np.ndarray,
    segments_a: np.ndarray,
    group_of_b: np.ndarray,
    segments_b: np.ndarray,
    num_groups: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) in the same group whose segments may overlap, without a Python loop.

    Every same-group pair with a positive intersection is returned (a few non-overlapping ones may
    be too; compute the tIoU to filter). Within a group, with b sorted by start, the b that can
    overlap a start in ``[start_a - longest b of the group, end_a]``: a contiguous run, found by
    binary search, so the cost follows the number of overlapping pairs, not the product of the
    group sizes.

    Args:
        group_of_a: ``(N,)`` int group id in [0, num_groups) of each a (e.g. a prediction's video).
        segments_a: ``(N, 2)`` seconds.
        group_of_b: ``(M,)`` int group id of each b.
        segments_b: ``(M, 2)`` seconds.
        num_groups: number of distinct group ids.

    Returns:
        ``(index_a, index_b)``, two ``(K,)`` int64 arrays, ordered by ``index_a`` then by b's start.
    """
    group_of_a = np.asarray(group_of_a, dtype=np.int64)
    group_of_b = np.asarray(group_of_b, dtype=np.int64)
    segments_a = np.asarray(segments_a, dtype=np.float64).reshape(-1, 2)
    segments_b = np.asarray(segments_b, dtype=np.float64).reshape(-1, 2)
    longest_b = np.zeros(num_groups)
    np.maximum.at(longest_b, group_of_b, segments_b[:, 1] - segments_b[:, 0])

    # The run is found by searchsorted on an exact integer key (group, rank of the start among all
    # values involved). The lower bound is widened by a relative margin so that rounding in the
    # subtraction can never drop an overlapping b.
    reach = longest_b[group_of_a]
    low_value = segments_a[:, 0] - reach - 1e-9 * (np.abs(segments_a[:, 0]) + reach) - 1e-12
    num_a, num_b = len(group_of_a), len(group_of_b)
    all_values = np.concatenate([segments_b[:, 0], low_value, segments_a[:, 1]])
    _, rank = np.unique(all_values, return_inverse=True)  # equal values, equal rank
    num_ranks = int(rank.max()) + 1 if len(rank) else 1
    key_b = group_of_b * num_ranks + rank[:num_b]
    b_order = np.argsort(key_b, kind="stable")  # b by group, then start
    sorted_key_b = key_b[b_order]
    first = np.searchsorted(sorted_key_b, group_of_a * num_ranks + rank[num_b : num_b + num_a], side="left")
    last = np.searchsorted(sorted_key_b, group_of_a * num_ranks + rank[num_b + num_a :], side="right")
    pairs_per_a = np.maximum(last - first, 0)

    index_a = np.repeat(np.arange(num_a, dtype=np.int64), pairs_per_a)
    # offset of each pair inside its a's run: 0, 1, ..., pairs_per_a - 1
    run_start = np.cumsum(pairs_per_a) - pairs_per_a
    offset = np.arange(len(index_a), dtype=np.int64) - np.repeat(run_start, pairs_per_a)
    index_b = b_order[np.repeat(first, pairs_per_a) + offset]
    return index_a, index_b
