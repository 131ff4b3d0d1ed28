"""Temporal intersection over union (tIoU) of segments, pairs of segments that share a group, and
the two sorts the metrics build on (stable integer argsort, group-then-score order).

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
    intersection = np.minimum(segments_a[:, 1], segments_b[:, 1]) - np.maximum(segments_a[:, 0], segments_b[:, 0])
    np.maximum(intersection, 0.0, out=intersection)
    union = (segments_b[:, 1] - segments_b[:, 0]) + (segments_a[:, 1] - segments_a[:, 0]) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


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


def stable_argsort(values: np.ndarray) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` for non-negative integers, several times faster.

    Each value is made unique as ``value * N + index``; numpy sorts plain int64 values with SIMD
    code, much faster than it sorts indices, and the index is the remainder. Falls back to
    numpy's stable argsort when the key would not fit in int64.

    Args:
        values: ``(N,)`` non-negative integers.

    Returns:
        ``(N,)`` int64 indices: by value, equal values in index order.
    """
    values = np.asarray(values, dtype=np.int64)
    count = len(values)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    if int(values.max()) >= np.iinfo(np.int64).max // count - 1:
        return np.argsort(values, kind="stable")
    return np.sort(values * count + np.arange(count)) % count


def dense_rank(values: np.ndarray) -> np.ndarray:
    """``(N,)`` int64 rank of each value among the distinct values (equal values, equal rank)."""
    order = np.argsort(values)  # any order among equal values: they get one rank below
    ranked = values[order]
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.concatenate([[0], np.cumsum(ranked[1:] != ranked[:-1])])
    return rank


def group_then_score_order(groups: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices ordering entries by group, then score descending, equal scores in input order.

    The same order as ``np.lexsort((-scores, groups))`` (which merge-sorts once per key), by one
    :func:`stable_argsort` of the integer key (group, rank of the score).

    Args:
        groups: ``(N,)`` non-negative integers (a class, a video).
        scores: ``(N,)`` finite floats.

    Returns:
        ``(N,)`` int64 indices.
    """
    groups = np.asarray(groups, dtype=np.int64)
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    # + 0.0 makes -0.0 into 0.0, which compares equal to it (one rank, input order between them)
    descending_rank = dense_rank(-np.asarray(scores, dtype=np.float64) + 0.0)
    num_ranks = int(descending_rank.max()) + 1
    if int(groups.max()) >= np.iinfo(np.int64).max // (num_ranks * len(groups)) - 1:
        return np.lexsort((-scores, groups))
    return stable_argsort(groups * num_ranks + descending_rank)


def _ordered_int64(values: np.ndarray) -> np.ndarray:
    """int64 keys that compare as the float64 ``values`` do (no NaN): the IEEE bit patterns, with
    the negative ones' magnitude bits flipped. numpy's binary search is several times faster on
    integers than on floats, which it compares NaN-aware."""
    bits = (np.asarray(values, dtype=np.float64) + 0.0).view(np.int64)  # + 0.0: -0.0 becomes 0.0
    return np.where(bits < 0, bits ^ np.int64(0x7FFFFFFFFFFFFFFF), bits)


def _searchsorted_in_order(sorted_values: np.ndarray, queries: np.ndarray, side: str) -> np.ndarray:
    """``np.searchsorted(sorted_values, queries, side)`` for many queries in random order: searched
    in ascending order, each binary search starts where the last one ended, which is several
    times faster than the sort of the queries costs."""
    order = np.argsort(queries)
    positions = np.empty(len(queries), dtype=np.int64)
    positions[order] = np.searchsorted(sorted_values, queries[order], side=side)
    return positions


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
        ``(index_a, index_b)``, two ``(K,)`` int64 arrays, ordered by ``index_a`` then by b's start
        (equal starts in b's order).
    """
    group_of_a = np.asarray(group_of_a, dtype=np.int64)
    group_of_b = np.asarray(group_of_b, dtype=np.int64)
    segments_a = np.asarray(segments_a, dtype=np.float64).reshape(-1, 2)
    segments_b = np.asarray(segments_b, dtype=np.float64).reshape(-1, 2)
    num_a, num_b = len(group_of_a), len(group_of_b)
    if num_a == 0 or num_b == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    longest_b = np.zeros(num_groups)
    np.maximum.at(longest_b, group_of_b, segments_b[:, 1] - segments_b[:, 0])

    # The run is found by searchsorted on an exact integer key: (group, rank of b's start among the
    # distinct starts of b). The bounds of a become ranks too: the b starts at or above the lower
    # bound are those of rank >= (distinct starts below it), the b starts at or below end_a those of
    # rank < (distinct starts at or below it). The lower bound is widened by a relative margin so
    # that rounding in the subtraction can never drop an overlapping b.
    reach = longest_b[group_of_a]
    low_value = segments_a[:, 0] - reach - 1e-9 * (np.abs(segments_a[:, 0]) + reach) - 1e-12
    distinct_starts, start_rank = np.unique(_ordered_int64(segments_b[:, 0]), return_inverse=True)
    num_ranks = len(distinct_starts)
    key_b = group_of_b * num_ranks + start_rank
    b_order = stable_argsort(key_b)  # b by group, then start
    sorted_key_b = key_b[b_order]
    low_rank = _searchsorted_in_order(distinct_starts, _ordered_int64(low_value), side="left")
    high_rank = _searchsorted_in_order(distinct_starts, _ordered_int64(segments_a[:, 1]), side="right")
    first = np.searchsorted(sorted_key_b, group_of_a * num_ranks + low_rank, side="left")
    last = np.searchsorted(sorted_key_b, group_of_a * num_ranks + high_rank, side="left")
    return _pairs_of_runs(first, np.maximum(last - first, 0), b_order)


def same_group_pairs(
    group_of_a: np.ndarray, group_of_b: np.ndarray, num_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, j) with ``group_of_a[i] == group_of_b[j]``, whatever the segments: cheaper than
    :func:`overlapping_pairs` when the groups of b are small (ground truth: a few segments of one
    class in one video). The pair count is known in advance: the sum over a of the b in its group.

    Args:
        group_of_a: ``(N,)`` int group id in [0, num_groups) of each a.
        group_of_b: ``(M,)`` int group id of each b.
        num_groups: number of distinct group ids.

    Returns:
        ``(index_a, index_b)``, two ``(K,)`` int64 arrays, ordered by ``index_a`` then by ``index_b``.
    """
    group_of_a = np.asarray(group_of_a, dtype=np.int64)
    group_of_b = np.asarray(group_of_b, dtype=np.int64)
    b_per_group = np.bincount(group_of_b, minlength=num_groups)
    first_of_group = np.cumsum(b_per_group) - b_per_group
    return _pairs_of_runs(first_of_group[group_of_a], b_per_group[group_of_a], stable_argsort(group_of_b))


def _pairs_of_runs(first: np.ndarray, count: np.ndarray, b_order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of each a ``i`` with the ``count[i]`` b at ``b_order[first[i]:first[i] + count[i]]``:
    ``(index_a, index_b)``, two ``(K,)`` int64 arrays, ``K = count.sum()``, ordered by ``index_a``."""
    index_a = np.repeat(np.arange(len(first), dtype=np.int64), count)
    # position of each pair's b in b_order: first[i], first[i] + 1, ..., first[i] + count[i] - 1
    run_start = np.cumsum(count) - count
    position = np.arange(len(index_a), dtype=np.int64) + np.repeat(first - run_start, count)
    return index_a, b_order[position]
