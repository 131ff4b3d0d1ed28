"""Class-agnostic proposal metrics: average recall against the average number of proposals per video
(AR@AN) and the area under that curve, as ActivityNet's ``eval_proposal.py`` computes them (the
protocol BMN and the EK100 proposal generator report).

The protocol, with ``max_avg_proposals`` = 100:

1. The videos are those with ground truth. ``ratio = max_avg_proposals * num_videos / P`` where ``P``
   counts *every* proposal in the file (also those of videos without ground truth, as the official
   code does). Each video keeps its best ``min(int(n * ratio), n)`` proposals by score (stable sort:
   equal scores keep file order).
2. For ``j = 1..100`` the fraction ``f_j = j / 100 * max_avg_proposals * num_videos / K`` (``K`` the
   kept total); a video with ``k`` kept proposals uses its top ``min(int(k * f_j), k)``. The float
   arithmetic is the official one, including its truncation (``int(100 * 0.29)`` is 28, so the
   29th point uses 28 proposals per video there and here alike).
3. A ground-truth segment is recalled at threshold ``t`` if any of those proposals has tIoU >= t
   (a proposal may recall several segments). Recall = recalled / all ground-truth segments; the
   average recall (AR) is the mean over thresholds 0.5:0.05:0.95.
4. ``AN_j = f_j * K / num_videos`` (= j for 100 proposals per video); AR@n is the AR at ``AN = n``;
   AUC = trapezoid area of AR over AN divided by the last AN, a fraction (the official code prints
   it times 100).

Vectorized: for every (ground truth, threshold) the rank of the first proposal reaching the
threshold is found once; recall at every point is then a comparison of that rank with the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from evaluation.tiou import group_then_score_order, overlapping_pairs, paired_tiou, same_group_pairs
from runstate.parts import contiguous_shares, default_parts, run_in_parts

if TYPE_CHECKING:
    import pandas as pd

PROPOSAL_TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
NUM_CURVE_POINTS = 100
NAMED_AR_POINTS = (1, 5, 10, 100)  # AR@n reported when max_avg_proposals is 100
# Each ground truth is paired with every kept proposal of its video when that makes at most this
# many pairs per proposal (no search; the tIoU filters), else only with the overlapping ones.
_ALL_PAIRS_PER_PROPOSAL = 4
# The first-hit ranks are computed in one process per this many kept proposals (and usable CPU).
PROPOSALS_PER_PART = 200_000


@dataclass
class ProposalResult:
    """AR@AN curve.

    Attributes:
        tiou_thresholds: ``(T,)``.
        recall: ``(T, 100)`` recall at each threshold and curve point.
        average_recall: ``(100,)`` recall averaged over thresholds.
        average_num_proposals: ``(100,)`` average number of proposals per video at each point.
    """

    tiou_thresholds: np.ndarray
    recall: np.ndarray
    average_recall: np.ndarray
    average_num_proposals: np.ndarray

    @property
    def auc(self) -> float:
        """Area under AR(AN) divided by the largest AN, a fraction in [0, 1]."""
        area = np.trapezoid(self.average_recall, self.average_num_proposals)
        return float(area / self.average_num_proposals[-1])

    def ar_at(self, num_proposals: float) -> float:
        """AR at the curve point whose AN is closest to ``num_proposals``."""
        index = int(np.argmin(np.abs(self.average_num_proposals - num_proposals)))
        return float(self.average_recall[index])

    def to_metrics(self) -> dict:
        """``{"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}`` as fractions (points beyond the curve's
        last AN are left out)."""
        largest = self.average_num_proposals[-1]
        metrics = {f"AR@{n}": self.ar_at(n) for n in NAMED_AR_POINTS if n <= largest * (1 + 1e-9)}
        metrics["AUC"] = self.auc
        return metrics


def average_recall(
    ground_truth: pd.DataFrame,
    proposals: pd.DataFrame,
    tiou_thresholds: Sequence[float] | None = None,
    max_avg_proposals: float = 100,
    workers: int | None = None,
) -> ProposalResult:
    """AR@AN of class-agnostic proposals (the protocol in the module docstring).

    Args:
        ground_truth: ``video_id, start, end`` (seconds); every row is one segment to recall.
        proposals: ``video_id, start, end, score``; row order breaks score ties.
        tiou_thresholds: default 0.5:0.05:0.95.
        max_avg_proposals: the curve's largest average number of proposals per video.
        workers: processes (:func:`average_recall_of_columns`); None: by size.
    """
    gt_video, videos = ground_truth["video_id"].astype(str).factorize()
    return average_recall_of_columns(  # which also checks that neither table is empty
        gt_video.astype(np.int64), ground_truth[["start", "end"]].to_numpy(np.float64), len(videos),
        videos.get_indexer(proposals["video_id"].astype(str)).astype(np.int64),
        proposals[["start", "end"]].to_numpy(np.float64), proposals["score"].to_numpy(np.float64),
        tiou_thresholds, max_avg_proposals, workers,
    )


def average_recall_of_columns(
    gt_video: np.ndarray,
    gt_segments: np.ndarray,
    num_videos: int,
    prop_video: np.ndarray,
    prop_segments: np.ndarray,
    prop_scores: np.ndarray,
    tiou_thresholds: Sequence[float] | None = None,
    max_avg_proposals: float = 100,
    workers: int | None = None,
) -> ProposalResult:
    """:func:`average_recall` of columns.

    Args:
        gt_video: ``(G,)`` int64 video of each ground-truth segment, in ``[0, num_videos)``; every
            one of the ``num_videos`` videos has a segment.
        gt_segments: ``(G, 2)`` seconds.
        num_videos: the number of videos with ground truth.
        prop_video: ``(P,)`` int64 video of each proposal in the same codes; a value outside
            ``[0, num_videos)`` for a video without ground truth.
        prop_segments: ``(P, 2)`` seconds.
        prop_scores: ``(P,)``; the row order breaks ties.
        tiou_thresholds: default 0.5:0.05:0.95.
        max_avg_proposals: the curve's largest average number of proposals per video.
        workers: processes the first-hit ranks are computed in (``runstate.parts``), each for a
            range of videos; None: one per :data:`PROPOSALS_PER_PART` kept proposals and usable
            CPU. The same result for any number.
    """
    thresholds = PROPOSAL_TIOU_THRESHOLDS if tiou_thresholds is None else np.asarray(tiou_thresholds, float)
    if len(gt_video) == 0:
        raise ValueError("no ground-truth segment to recall")
    if len(prop_video) == 0:
        raise ValueError("the proposal file holds no proposal")
    ratio = max_avg_proposals * num_videos / len(prop_video)

    # Proposals of ground-truth videos, by video then score descending (stable), with their rank.
    in_gt_video = np.flatnonzero((prop_video >= 0) & (prop_video < num_videos))
    prop_video = prop_video[in_gt_video]
    prop_segments = np.take(prop_segments, in_gt_video, axis=0)
    order = group_then_score_order(prop_video, prop_scores[in_gt_video])
    prop_video, prop_segments = prop_video[order], np.take(prop_segments, order, axis=0)
    per_video = np.bincount(prop_video, minlength=num_videos)
    rank = np.arange(len(prop_video)) - (np.cumsum(per_video) - per_video)[prop_video]

    kept_per_video = np.minimum((per_video * ratio).astype(np.int64), per_video)
    total_kept = int(kept_per_video.sum())
    if total_kept == 0:
        raise ValueError("no proposal kept for any ground-truth video")
    kept = np.flatnonzero(rank < kept_per_video[prop_video])
    prop_video, prop_segments, rank = prop_video[kept], np.take(prop_segments, kept, axis=0), rank[kept]

    num_parts = default_parts(len(prop_video), PROPOSALS_PER_PART) if workers is None else workers
    first_hit = _first_hit_rank_in_parts(gt_video, gt_segments, prop_video, prop_segments, rank, num_videos,
                                         thresholds, max(1, min(num_parts, num_videos)))

    points = np.arange(1, NUM_CURVE_POINTS + 1)
    fractions = points / 100.0 * (max_avg_proposals * float(num_videos) / total_kept)
    # (V, 1) * (1, J) -> (V, J): proposals used per video at each curve point
    used = np.minimum(
        (kept_per_video[:, None] * fractions[None, :]).astype(np.int64), kept_per_video[:, None]
    )
    used_for_gt = used[gt_video]  # (G, J)
    recall = np.empty((len(thresholds), NUM_CURVE_POINTS))
    for t in range(len(thresholds)):
        # (G, 1) < (G, J) -> (G, J): recalled when the first hit lies inside the used proposals
        recall[t] = (first_hit[t][:, None] < used_for_gt).sum(axis=0) / len(gt_video)
    average_num_proposals = fractions * (float(total_kept) / num_videos)
    return ProposalResult(thresholds, recall, recall.mean(axis=0), average_num_proposals)


def _first_hit_rank_in_parts(
    gt_video: np.ndarray,
    gt_segments: np.ndarray,
    prop_video: np.ndarray,
    prop_segments: np.ndarray,
    rank: np.ndarray,
    num_videos: int,
    thresholds: np.ndarray,
    num_parts: int,
) -> np.ndarray:
    """:func:`_first_hit_rank` with the videos split into ``num_parts`` ranges of about equal
    proposal counts, each in its own process; a ground truth's first hit depends on its own
    video's proposals only. ``prop_video`` must be ascending (proposals grouped by video)."""
    if num_parts == 1:
        return _first_hit_rank(gt_video, gt_segments, prop_video, prop_segments, rank, num_videos, thresholds)
    # videos [first[k], first[k + 1]) holding about equal shares of the proposals
    first = contiguous_shares(np.bincount(prop_video, minlength=num_videos), num_parts)

    def part_of(part: int, _: int) -> tuple[np.ndarray, np.ndarray]:
        """(its ground truth's rows, their (T, G_part) first-hit ranks)"""
        begin, end = first[part], first[part + 1]
        gt_rows = np.flatnonzero((gt_video >= begin) & (gt_video < end))
        props = slice(*np.searchsorted(prop_video, [begin, end]))
        return gt_rows, _first_hit_rank(gt_video[gt_rows] - begin, np.take(gt_segments, gt_rows, axis=0),
                                        prop_video[props] - begin, prop_segments[props], rank[props],
                                        max(end - begin, 1), thresholds)

    first_hit = np.empty((len(thresholds), len(gt_video)), dtype=np.int64)
    for gt_rows, part_first_hit in run_in_parts(part_of, num_parts):
        first_hit[:, gt_rows] = part_first_hit
    return first_hit


def _first_hit_rank(
    gt_video: np.ndarray,
    gt_segments: np.ndarray,
    prop_video: np.ndarray,
    prop_segments: np.ndarray,
    rank: np.ndarray,
    num_videos: int,
    thresholds: np.ndarray,
) -> np.ndarray:
    """``(T, G)`` rank of the best-scored proposal reaching each threshold for each ground truth
    (``int64`` max when none does)."""
    all_pairs = int(np.bincount(prop_video, minlength=num_videos)[gt_video].sum())
    if all_pairs <= _ALL_PAIRS_PER_PROPOSAL * len(prop_video):
        pair_gt, pair_prop = same_group_pairs(gt_video, prop_video, num_videos)
    else:
        pair_gt, pair_prop = overlapping_pairs(gt_video, gt_segments, prop_video, prop_segments, num_videos)
    tiou = paired_tiou(np.take(prop_segments, pair_prop, axis=0), np.take(gt_segments, pair_gt, axis=0))
    # How many of the thresholds (in ascending order) each pair reaches: a pair that reaches k
    # reaches exactly the k lowest.
    ascending = np.argsort(thresholds, kind="stable")
    num_reached = np.searchsorted(thresholds[ascending], tiou, side="right")
    reaches_one = num_reached > 0
    pair_gt, pair_rank, num_reached = pair_gt[reaches_one], rank[pair_prop[reaches_one]], num_reached[reaches_one]

    # best[g, k - 1]: the best rank among the pairs of ground truth g that reach exactly k thresholds
    num_thresholds = len(thresholds)
    best = np.full(len(gt_video) * num_thresholds, np.iinfo(np.int64).max)
    np.minimum.at(best, pair_gt * num_thresholds + num_reached - 1, pair_rank)
    # The first hit at the j-th lowest threshold: the best rank among pairs reaching more than j.
    # (G, T) running minimum from the highest threshold down
    best_reaching = np.minimum.accumulate(best.reshape(-1, num_thresholds)[:, ::-1], axis=1)[:, ::-1]
    first_hit = np.empty((num_thresholds, len(gt_video)), dtype=np.int64)
    first_hit[ascending] = best_reaching.T  # (T, G), thresholds back in their given order
    return first_hit
