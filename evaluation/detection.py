"""Average mAP of temporal action detections, as the ActivityNet/HACS and EPIC-Kitchens-100 evaluators
compute it, vectorized with numpy.

The protocol (ActivityNet ``eval_detection.py``; EK100 ``evaluate_detection_json_ek100.py`` is the
same code with other thresholds and labels), for each class and each tIoU threshold:

1. The class's predictions are sorted by score, highest first. The sort is *stable*: predictions
   with equal scores keep their input order (the order of the submission file). The official code
   uses ``argsort()[::-1]``, whose tie order depends on numpy's sort kind and the platform; a stable
   order is the reproducible choice.
2. A prediction in a video without ground truth of its class is a false positive.
3. Otherwise the class's ground-truth segments of that video are tried from the highest tIoU with
   the prediction to the lowest: below the threshold, the prediction is a false positive and the
   search stops; a segment already matched (at this threshold) is skipped; else the prediction is
   a true positive and the segment is locked. A tIoU exactly at the threshold matches (``>=``).
   Segments with equal tIoU are tried in *reverse* ground-truth order (the later row first), which
   is what the official ``argsort()[::-1]`` gives whenever numpy's sort keeps ties in order.
4. AP is all-point interpolated precision (precision made non-increasing from the right, summed
   over the recall steps) with the class's ground-truth count as the number of positives. The sum
   is formed and taken as the official ``interpolated_prec_rec`` does (``np.sum`` over the ranks
   where recall changes), so that, given the same matches, the AP is the official one bit for bit.
5. mAP at a threshold is the mean AP over the classes that have ground truth; a class with ground
   truth but no prediction scores 0 and counts. Average mAP is the mean of mAP over thresholds.

Why it can be vectorized exactly: a prediction only competes for the locks of ground truth of its
own (class, video) group, so the sequential dependency runs only along the score order *inside*
one group. Predictions are given a level = their rank inside their group (counting only those
that overlap some ground truth at the lowest threshold); all predictions of one level, over every
group and every threshold at once, are resolved in one round of array operations, and the rounds
go level by level. The number of rounds is the largest number of overlapping predictions in one
group, not the number of predictions.

Where this differs from the official code, on purpose:

* equal scores keep input order (point 1 above);
* a predicted HACS label without ground truth in the subset raises :class:`LabelError` naming it
  (the official code dies with a KeyError); EK100 predictions of such labels are dropped (the
  official code leaves their label unmapped, where it can alias onto another class's index);
* ActivityNet's server-side list of blocked videos is not fetched (no network); all videos count;
* zero-union segment pairs score tIoU 0 (see :mod:`evaluation.tiou`).

Kept as officially: predictions of videos outside the evaluated subset are false positives, and
the thresholds are the official ``np.linspace`` values bit for bit (see the constants below).

Seconds everywhere; the tIoU is :func:`evaluation.tiou.paired_tiou`. The entry points take tables
(pandas DataFrames) or, the ``*_columns`` ones, numpy columns (:class:`SegmentColumns`, a file's
``formats.submission.PredictionColumns``): the command line scores columns and never imports pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from evaluation.tiou import (
    dense_rank,
    group_then_score_order,
    overlapping_pairs,
    paired_tiou,
    same_group_pairs,
    stable_argsort,
)
from runstate.parts import contiguous_shares, default_parts, run_in_parts

if TYPE_CHECKING:
    import pandas as pd

    from formats.submission import PredictionColumns

# The official np.linspace values, bit for bit. They are not all the decimals they print as:
# HACS's "0.9" is 0.8999999999999999 (a tIoU of exactly 0.9 matches it) and EK100's "0.3" is
# 0.30000000000000004 (a tIoU of exactly 0.3 does not match it). Both evaluators behave so.
HACS_TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EK100_TIOU_THRESHOLDS = np.linspace(0.1, 0.5, 5)
EK100_TASKS = ("verb", "noun", "action")
EK100_PREDICTION_IDS = ("verb", "noun", "action_verb", "action_noun")  # a prediction's class id columns

# Candidate pairs are formed for this many predictions at a time, so that memory stays bounded.
_PREDICTIONS_PER_BATCH = 25_000
# A batch pairs each prediction with every ground truth of its group when that makes at most this
# many pairs per prediction on average (no search; the tIoU filters), else only with the overlapping
# ones (a binary search): at most 200,000 pairs a batch the first way.
_ALL_PAIRS_PER_PREDICTION = 8
# The largest (class, video) key looked up through a table (4 bytes an entry) rather than searched.
_GROUP_TABLE_LIMIT = 1 << 23
# Scoring splits into one process per this many predictions (and usable CPU) by default.
PREDICTIONS_PER_PART = 100_000


class LabelError(ValueError):
    """A prediction names a class that has no ground truth in the evaluated subset (HACS protocol)."""


@dataclass
class DetectionResult:
    """Per-class, per-threshold AP of one task.

    Attributes:
        tiou_thresholds: ``(T,)`` float.
        class_labels: ``(C,)`` int label ids of the classes with ground truth, ascending.
        ap: ``(T, C)`` float64 average precision, fractions in [0, 1].
        num_ground_truth: ``(C,)`` int ground-truth segments per class.
        num_predictions: ``(C,)`` int predictions evaluated per class.
        class_names: ``C`` display names (defaults to the label ids as strings).
    """

    tiou_thresholds: np.ndarray
    class_labels: np.ndarray
    ap: np.ndarray
    num_ground_truth: np.ndarray
    num_predictions: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.class_names:
            self.class_names = [str(label) for label in self.class_labels]

    @property
    def mAP(self) -> np.ndarray:  # noqa: N802 - the metric's name
        """``(T,)`` mean AP over classes at each threshold."""
        return self.ap.mean(axis=1) if self.ap.shape[1] else np.zeros(len(self.tiou_thresholds))

    @property
    def average_mAP(self) -> float:  # noqa: N802
        """Mean of :attr:`mAP` over the thresholds."""
        return float(self.mAP.mean())

    @property
    def per_class_average_ap(self) -> np.ndarray:
        """``(C,)`` each class's AP averaged over the thresholds."""
        return self.ap.mean(axis=0)

    def to_metrics(self) -> dict:
        """The metrics.json record: fractions, per-class AP averaged over thresholds."""
        return {
            "tiou_thresholds": [round(float(t), 10) for t in self.tiou_thresholds],
            "mAP": [float(m) for m in self.mAP],
            "average_mAP": self.average_mAP,
            "per_class": {
                name: float(value) for name, value in zip(self.class_names, self.per_class_average_ap)
            },
        }


@dataclass
class SegmentColumns:
    """Segments as the metrics read them, ``N`` rows of numpy columns.

    Attributes:
        label: ``(N,)`` int64 class label.
        video: ``(N,)`` int64 video code: the ground truth and the predictions of one video have the
            same code (nothing else of the videos is read).
        segments: ``(N, 2)`` float64 ``[start, end]`` in seconds.
        score: ``(N,)`` float64 for predictions; None for ground truth.
    """

    label: np.ndarray
    video: np.ndarray
    segments: np.ndarray
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    def rows(self, keep: np.ndarray) -> SegmentColumns:
        """The rows where the ``(N,)`` bool mask ``keep`` is true, in their order."""
        index = np.flatnonzero(keep)
        return SegmentColumns(self.label[index], self.video[index], np.take(self.segments, index, axis=0),
                              None if self.score is None else self.score[index])


def average_precision(
    ground_truth: pd.DataFrame, predictions: pd.DataFrame, tiou_thresholds: Sequence[float]
) -> DetectionResult:
    """AP of every class with ground truth, at every threshold (the protocol in the module docstring).

    Args:
        ground_truth: columns ``video_id`` (str), ``start``, ``end`` (seconds), ``label`` (int).
            The row order sets the tie order between equally overlapping segments.
        predictions: columns ``video_id``, ``start``, ``end``, ``label``, ``score``. Every label must
            have ground truth (the dataset wrappers drop or reject the others first). The row order
            sets the order among equal scores.
        tiou_thresholds: ``T`` thresholds in (0, 1].

    Returns:
        A :class:`DetectionResult` with ``ap`` of shape ``(T, C)``.
    """
    thresholds = _checked_thresholds(tiou_thresholds)
    if ground_truth.empty:
        raise ValueError("no ground-truth segment to evaluate against")
    gt_video, pred_video = _video_codes(ground_truth["video_id"], predictions["video_id"])
    return average_precision_of_columns(
        SegmentColumns(ground_truth["label"].to_numpy(np.int64), gt_video,
                       ground_truth[["start", "end"]].to_numpy(np.float64)),
        SegmentColumns(predictions["label"].to_numpy(np.int64), pred_video,
                       predictions[["start", "end"]].to_numpy(np.float64), predictions["score"].to_numpy(np.float64)),
        thresholds,
    )


def average_precision_of_columns(
    ground_truth: SegmentColumns, predictions: SegmentColumns, tiou_thresholds: Sequence[float],
    workers: int | None = None,
) -> DetectionResult:
    """:func:`average_precision` of columns (the row orders mean what they mean there).

    ``workers``: processes to score in (``runstate.parts``; None: one per
    :data:`PREDICTIONS_PER_PART` predictions and usable CPU). Each scores a contiguous range of the
    classes (as many predictions each as can be), since no class's AP depends on another's; the
    result is the same, bit for bit, for any number.
    """
    thresholds = _checked_thresholds(tiou_thresholds)
    if len(ground_truth) == 0:
        raise ValueError("no ground-truth segment to evaluate against")
    class_labels = np.unique(ground_truth.label)
    pred_class = _group_of(class_labels, predictions.label)  # -1: a label without ground truth
    if np.any(pred_class < 0):
        raise LabelError(f"prediction label {predictions.label[pred_class < 0][0]} has no ground truth")
    num_parts = default_parts(len(predictions), PREDICTIONS_PER_PART) if workers is None else workers
    num_parts = max(1, min(num_parts, len(class_labels)))
    if num_parts == 1:
        return _average_precision_of_classes(ground_truth, predictions, thresholds)
    gt_class = _group_of(class_labels, ground_truth.label)
    # class ranges [first[k], first[k + 1]) holding about equal shares of the predictions
    first = contiguous_shares(np.bincount(pred_class, minlength=len(class_labels)), num_parts)

    def score_part(part: int, num_parts: int) -> DetectionResult:
        begin, end = first[part], first[part + 1]
        if begin == end:  # one class holds more than a share: nothing left for this part
            return DetectionResult(thresholds, class_labels[:0], np.zeros((len(thresholds), 0)),
                                   np.zeros(0, np.int64), np.zeros(0, np.int64))
        return _average_precision_of_classes(ground_truth.rows((gt_class >= begin) & (gt_class < end)),
                                             predictions.rows((pred_class >= begin) & (pred_class < end)),
                                             thresholds)

    parts = [part for part in run_in_parts(score_part, num_parts) if len(part.class_labels)]
    return DetectionResult(thresholds, np.concatenate([part.class_labels for part in parts]),
                           np.concatenate([part.ap for part in parts], axis=1),
                           np.concatenate([part.num_ground_truth for part in parts]),
                           np.concatenate([part.num_predictions for part in parts]))


def _average_precision_of_classes(
    ground_truth: SegmentColumns, predictions: SegmentColumns, thresholds: np.ndarray
) -> DetectionResult:
    """The AP of every class of ``ground_truth`` (non-empty), in one process."""
    class_labels, gt_class = np.unique(ground_truth.label, return_inverse=True)
    num_classes = len(class_labels)
    pred_class = _group_of(class_labels, predictions.label)  # every label has ground truth: checked

    # Class by class, score descending, equal scores in input order.
    order = group_then_score_order(pred_class, predictions.score)
    pred_class = pred_class[order]
    pred_segments = np.take(predictions.segments, order, axis=0)  # (P, 2); take is much faster than [order]

    true_positive = _match(
        gt_class, ground_truth.video, ground_truth.segments, pred_class, predictions.video[order], pred_segments,
        thresholds,
    )  # (T, P), predictions in sorted order

    num_ground_truth = np.bincount(gt_class, minlength=num_classes)
    num_predictions = np.bincount(pred_class, minlength=num_classes)
    ap = _interpolated_ap(true_positive, pred_class, num_ground_truth, num_predictions)
    return DetectionResult(thresholds, class_labels, ap, num_ground_truth, num_predictions)


def _checked_thresholds(tiou_thresholds: Sequence[float]) -> np.ndarray:
    """``(T,)`` float64 thresholds, each in (0, 1]; else ValueError."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or len(thresholds) == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(f"tiou_thresholds must be a non-empty list of values in (0, 1], "
                         f"got {tiou_thresholds}")
    return thresholds


def _video_codes(gt_video_ids: pd.Series, pred_video_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer video ids: ``(G,)`` in ``[0, V)`` for the V videos with ground truth, and ``(P,)``
    the same ids for the predictions, with ``V`` for every video without ground truth (its
    predictions cannot match, so those videos need not be told apart)."""
    gt_codes, videos = gt_video_ids.astype(str).factorize()
    pred_codes = videos.get_indexer(pred_video_ids.astype(str))
    pred_codes[pred_codes < 0] = len(videos)
    return gt_codes.astype(np.int64), pred_codes.astype(np.int64)


def _group_of(group_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``(N,)`` index of each key in the sorted, distinct ``group_keys`` (``(K,)`` int64), -1 when
    absent. A lookup table over ``[0, largest key]`` when the keys are >= 0 and the largest is below
    ``_GROUP_TABLE_LIMIT`` (one memory access per key); else a binary search."""
    if len(group_keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    largest = int(group_keys[-1])
    if 0 <= int(group_keys[0]) and largest < _GROUP_TABLE_LIMIT and (len(keys) == 0 or keys.min() >= 0):
        table = np.full(largest + 2, -1, dtype=np.int32)  # the last entry answers every larger key
        table[group_keys] = np.arange(len(group_keys))
        return table[np.minimum(keys, largest + 1)].astype(np.int64)
    index = np.minimum(np.searchsorted(group_keys, keys), len(group_keys) - 1)
    return np.where(group_keys[index] == keys, index, -1)


def _run_starts(keys: np.ndarray) -> np.ndarray:
    """``(N,)`` index of the first entry of each entry's run of equal consecutive keys."""
    index = np.arange(len(keys))
    is_start = np.ones(len(keys), dtype=bool)
    is_start[1:] = keys[1:] != keys[:-1]
    return np.maximum.accumulate(np.where(is_start, index, 0))


def _match(
    gt_class: np.ndarray,
    gt_video: np.ndarray,
    gt_segments: np.ndarray,
    pred_class: np.ndarray,
    pred_video: np.ndarray,
    pred_segments: np.ndarray,
    thresholds: np.ndarray,
) -> np.ndarray:
    """Greedy matching with per-threshold locks, level by level (see the module docstring).

    Predictions must come sorted by (class, score descending). Returns ``(T, P)`` bool true-positive
    flags in that order; everything else is a false positive.
    """
    num_thresholds, num_preds = len(thresholds), len(pred_class)
    true_positive = np.zeros((num_thresholds, num_preds), dtype=bool)
    if num_preds == 0 or len(gt_class) == 0:
        return true_positive

    # (class, video) group of every ground-truth segment, as compact ids; a prediction can only
    # match in the group of its class and video, and most groups of predictions have no ground truth.
    num_videos = int(max(gt_video.max(), pred_video.max())) + 1
    group_keys, gt_group = np.unique(gt_class * num_videos + gt_video, return_inverse=True)
    pred_group = _group_of(group_keys, pred_class * num_videos + pred_video)  # -1: no ground truth
    in_a_group = np.flatnonzero(pred_group >= 0)  # ascending: score order in a class
    by_group = in_a_group[stable_argsort(pred_group[in_a_group])]  # by group, score order inside

    # Candidate pairs: same group and tIoU at or above the lowest threshold (the others never match).
    pair_pred, pair_gt, pair_tiou = _candidate_pairs(
        by_group, pred_group[by_group], gt_group, len(group_keys), np.take(pred_segments, by_group, axis=0),
        gt_segments, thresholds.min(),
    )
    if len(pair_pred) == 0:
        return true_positive
    runs = _level_runs(pair_pred, pred_group)
    preference = _preference_keys(pair_tiou, pair_gt, len(gt_class))
    reaches = pair_tiou[runs.pair_order][None, :] >= thresholds[:, None]  # (T, N), pairs by level
    pair_gt, preference = pair_gt[runs.pair_order], preference[runs.pair_order]

    locked = np.zeros((num_thresholds, len(gt_class)), dtype=bool)
    for level in range(len(runs.level_bounds) - 1):
        begin, end = runs.level_bounds[level], runs.level_bounds[level + 1]
        first_run, end_run = runs.level_first_run[level], runs.level_first_run[level + 1]
        # (T, n): a pair is usable at threshold t when it reaches t and its ground truth is free;
        # per run (one prediction), the usable pair of highest preference, -1 when none: (T, m).
        usable = reaches[:, begin:end] & ~locked[:, pair_gt[begin:end]]
        run_begin = runs.run_begin[first_run:end_run] - begin  # (m,) in this level's n pairs
        best = np.maximum.reduceat(np.where(usable, preference[begin:end], -1), run_begin, axis=1)
        threshold_index, run_index = np.nonzero(best >= 0)
        # Predictions of one level are in distinct groups, so they never claim the same segment.
        locked[threshold_index, best[threshold_index, run_index] % len(gt_class)] = True
        true_positive[threshold_index, runs.run_pred[first_run + run_index]] = True
    return true_positive


@dataclass
class _LevelRuns:
    """Candidate pairs ordered for the level-by-level matching. A *run* is one prediction's pairs;
    a run's *level* is its rank among the runs of its (class, video) group, in score order.

    Attributes:
        pair_order: ``(N,)`` the pairs by level, each run's pairs side by side, runs of a level in
            their input order.
        run_begin: ``(R,)`` the first pair of each run, in that order.
        run_pred: ``(R,)`` the prediction of each run.
        level_bounds: ``(L + 1,)`` the pairs of level ``l`` are ``level_bounds[l]:level_bounds[l + 1]``.
        level_first_run: ``(L + 1,)`` the runs of level ``l``, likewise.
    """

    pair_order: np.ndarray
    run_begin: np.ndarray
    run_pred: np.ndarray
    level_bounds: np.ndarray
    level_first_run: np.ndarray


def _level_runs(pair_pred: np.ndarray, pred_group: np.ndarray) -> _LevelRuns:
    """:class:`_LevelRuns` of pairs given by prediction (``pair_pred`` ``(N,)``, each prediction's pairs
    side by side, predictions by group and score); ``pred_group`` ``(P,)`` is each prediction's group."""
    begins_run = np.ones(len(pair_pred), dtype=bool)
    begins_run[1:] = pair_pred[1:] != pair_pred[:-1]
    run_begin = np.flatnonzero(begins_run)  # (R,) in input order
    run_length = np.diff(np.append(run_begin, len(pair_pred)))
    run_pred = pair_pred[run_begin]
    run_level = np.arange(len(run_begin)) - _run_starts(pred_group[run_pred])
    run_order = stable_argsort(run_level)
    sorted_length = run_length[run_order]
    sorted_begin = np.cumsum(sorted_length) - sorted_length
    # pair k of a run moved from run_begin[r] + k to sorted_begin + k
    pair_order = np.arange(len(pair_pred)) + np.repeat(run_begin[run_order] - sorted_begin, sorted_length)
    level_first_run = np.searchsorted(run_level[run_order], np.arange(run_level.max() + 2))
    level_bounds = np.append(sorted_begin, len(pair_pred))[level_first_run]
    return _LevelRuns(pair_order, sorted_begin, run_pred[run_order], level_bounds, level_first_run)


def _preference_keys(pair_tiou: np.ndarray, pair_gt: np.ndarray, num_gt: int) -> np.ndarray:
    """``(N,)`` int64 key of each pair, larger for the segment a prediction tries first: the higher
    tIoU, then the later ground-truth row. ``key % num_gt`` is the pair's ground truth."""
    return dense_rank(pair_tiou) * num_gt + pair_gt


def _candidate_pairs(
    pred_index: np.ndarray,
    pred_group: np.ndarray,
    gt_group: np.ndarray,
    num_groups: int,
    pred_segments: np.ndarray,
    gt_segments: np.ndarray,
    min_tiou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction index, ground-truth index, tIoU) of same-group pairs with tIoU >= ``min_tiou``.

    ``pred_index`` ``(N,)`` names the predictions that ``pred_group`` and ``pred_segments``
    describe; the pairs carry these indices, in that order of predictions. Predictions are taken in
    batches so that memory stays bounded for leaderboard-size inputs; a batch pairs each prediction
    with every ground truth of its group (:func:`evaluation.tiou.same_group_pairs`) when that makes
    at most ``_ALL_PAIRS_PER_PREDICTION`` pairs per prediction, else only with the temporally
    overlapping ones (:func:`evaluation.tiou.overlapping_pairs`, a binary search).
    """
    gt_per_group = np.bincount(gt_group, minlength=num_groups)
    kept_pred, kept_gt, kept_tiou = [], [], []
    for begin in range(0, len(pred_group), _PREDICTIONS_PER_BATCH):
        end = min(begin + _PREDICTIONS_PER_BATCH, len(pred_group))
        groups = pred_group[begin:end]
        if int(gt_per_group[groups].sum()) <= _ALL_PAIRS_PER_PREDICTION * (end - begin):
            local_pred, pair_gt = same_group_pairs(groups, gt_group, num_groups)
        else:
            local_pred, pair_gt = overlapping_pairs(groups, pred_segments[begin:end], gt_group, gt_segments,
                                                    num_groups)
        pair_pred = local_pred + begin
        tiou = paired_tiou(np.take(pred_segments, pair_pred, axis=0), np.take(gt_segments, pair_gt, axis=0))
        keep = tiou >= min_tiou
        kept_pred.append(pred_index[pair_pred[keep]])
        kept_gt.append(pair_gt[keep])
        kept_tiou.append(tiou[keep])
    if not kept_pred:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(kept_pred), np.concatenate(kept_gt), np.concatenate(kept_tiou)


def _interpolated_ap(
    true_positive: np.ndarray, pred_class: np.ndarray, num_ground_truth: np.ndarray, num_predictions: np.ndarray
) -> np.ndarray:
    """All-point interpolated AP of every class at every threshold, with the official arithmetic.

    The official ``interpolated_prec_rec`` sums ``(recall step) x (best precision at or after it)``
    over the ranks where recall changes, with ``np.sum``: the ranks of the true positives, then one
    ``(1 - final recall) x 0`` term when recall ends below 1. Only those terms are formed here
    (a few per ground-truth segment, not one per prediction), with the same values in the same order,
    and each (threshold, class) list is summed by ``np.sum`` as one row, so the AP is the official
    one bit for bit (see ``reference.official_interpolated_ap``).

    Args:
        true_positive: ``(T, P)`` bool, predictions sorted by class, then score descending.
        pred_class: ``(P,)`` class index of each prediction in that order.
        num_ground_truth: ``(C,)`` positives per class (> 0).
        num_predictions: ``(C,)`` predictions per class.

    Returns:
        ``(T, C)`` AP; 0 for a class without true positives.
    """
    num_thresholds, num_classes = true_positive.shape[0], len(num_ground_truth)
    ap = np.zeros(num_thresholds * num_classes)
    threshold_index, position = np.nonzero(true_positive)  # row-major: by threshold, then rank
    if len(position) == 0:
        return ap.reshape(num_thresholds, num_classes)
    tp_class = pred_class[position]
    segment = threshold_index * num_classes + tp_class  # (threshold, class) of each true positive
    segment_start = _run_starts(segment)
    tp_count = np.arange(len(segment)) - segment_start + 1  # k-th true positive of its segment
    rank = position - (np.cumsum(num_predictions) - num_predictions)[tp_class] + 1  # 1-based, in class
    positives = num_ground_truth[tp_class].astype(np.float64)
    recall = tp_count / positives
    recall_step = recall - (tp_count - 1) / positives
    precision = tp_count / rank  # = tp / (tp + fp) at this rank
    terms = recall_step * _segment_suffix_max(precision, segment_start)

    # One row per (threshold, class): its terms, then 0.0 when its recall ends below 1.
    is_last = np.ones(len(segment), dtype=bool)
    is_last[:-1] = segment[1:] != segment[:-1]
    row_segment, row_count = segment[is_last], tp_count[is_last]
    row_length = row_count + (row_count < num_ground_truth[tp_class[is_last]])
    row_offset = np.cumsum(row_length) - row_length
    flat = np.zeros(int(row_length.sum()))
    flat[np.repeat(row_offset, row_count) + tp_count - 1] = terms
    for length in np.unique(row_length):  # rows of one length summed together: (rows, length) -> (rows,)
        rows = np.flatnonzero(row_length == length)
        ap[row_segment[rows]] = np.sum(flat[row_offset[rows][:, None] + np.arange(length)[None, :]], axis=1)
    return ap.reshape(num_thresholds, num_classes)


def _segment_suffix_max(values: np.ndarray, segment_start: np.ndarray) -> np.ndarray:
    """``(N,)`` the largest of ``values`` at or after each entry inside its segment (runs of
    entries that share ``segment_start``), exactly: a running maximum from the back over the
    integer key (segment, rank of the value), whose segment part grows towards the front."""
    distinct, rank = np.unique(values, return_inverse=True)
    segment_id = np.cumsum(segment_start == np.arange(len(values))) - 1
    offset = (segment_id[-1] - segment_id) * len(distinct)  # larger for earlier segments
    suffix_max = np.maximum.accumulate((offset + rank)[::-1])[::-1]
    return distinct[suffix_max - offset]


def _filter_subset(ground_truth: pd.DataFrame, subset: str | None) -> pd.DataFrame:
    if subset is None or "subset" not in ground_truth.columns:
        return ground_truth
    selected = ground_truth[ground_truth["subset"] == subset]
    if selected.empty:
        present = sorted(ground_truth["subset"].unique())
        raise ValueError(f"no ground-truth segment in subset '{subset}' (subsets present: {present})")
    return selected


def evaluate_hacs(
    ground_truth: pd.DataFrame,
    class_names: Sequence[str],
    predictions: pd.DataFrame,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
) -> DetectionResult:
    """HACS / ActivityNet detection average mAP.

    Args:
        ground_truth: segment table (``video_id, start, end, label`` and optionally ``subset``);
            ``label`` indexes ``class_names``.
        class_names: the dataset's class names.
        predictions: ``video_id, start, end, score, label_name`` (class *names*, as in the
            submission); all predictions count, also those of videos outside the subset (false
            positives), as in the official code.
        subset: only ground truth of this subset is evaluated (``None``: all rows).
        tiou_thresholds: default 0.5:0.05:0.95.

    Raises:
        LabelError: a predicted name has no ground truth in the subset (the official code
            crashes with a KeyError there); the message names it and its video.
    """
    thresholds = HACS_TIOU_THRESHOLDS if tiou_thresholds is None else np.asarray(tiou_thresholds)
    ground_truth = _filter_subset(ground_truth, subset)
    # (P,) codes into the distinct names (-1 for a missing name) -> class index, -1 when unknown.
    name_codes, distinct_names = predictions["label_name"].factorize()
    pred_labels = _class_of_names(class_names, ground_truth["label"].unique(), distinct_names)[name_codes]
    unknown = pred_labels < 0
    if unknown.any():
        row = predictions[unknown].iloc[0]
        raise LabelError(_unknown_label_message(row["label_name"], row["video_id"], subset, int(unknown.sum())))
    scored = predictions.assign(label=pred_labels)
    result = average_precision(ground_truth, scored, thresholds)
    result.class_names = [class_names[label] for label in result.class_labels]
    return result


def evaluate_hacs_columns(
    ground_truth: SegmentColumns,
    gt_video_ids: Sequence[str],
    class_names: Sequence[str],
    predictions: PredictionColumns,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    workers: int | None = None,
) -> DetectionResult:
    """:func:`evaluate_hacs` of columns: the same result, without a table.

    Args:
        ground_truth: the evaluated ground truth (already of the subset); ``label`` indexes
            ``class_names``, ``video`` indexes ``gt_video_ids``.
        gt_video_ids: the ground truth's video ids by code.
        class_names: the dataset's class names.
        predictions: a HACS submission's columns (``label_code`` into ``label_names``).
        subset: the subset's name, for the message of a :class:`LabelError`.
        tiou_thresholds: default 0.5:0.05:0.95.
        workers: scoring processes (:func:`average_precision_of_columns`; None: by size).
    """
    thresholds = HACS_TIOU_THRESHOLDS if tiou_thresholds is None else np.asarray(tiou_thresholds)
    pred_labels = _class_of_names(class_names, np.unique(ground_truth.label), predictions.label_names)[
        predictions.label_code]
    unknown = pred_labels < 0
    if unknown.any():
        first = int(np.argmax(unknown))
        video = predictions.video_ids[np.searchsorted(np.cumsum(predictions.video_sizes), first, side="right")]
        raise LabelError(_unknown_label_message(predictions.label_names[predictions.label_code[first]], video,
                                                subset, int(unknown.sum())))
    scored = SegmentColumns(pred_labels, predictions.video_codes(gt_video_ids), predictions.segments,
                            predictions.score)
    result = average_precision_of_columns(ground_truth, scored, thresholds, workers)
    result.class_names = [class_names[label] for label in result.class_labels]
    return result


def _class_of_names(class_names: Sequence[str], labels_with_gt: np.ndarray, names: Sequence) -> np.ndarray:
    """``(U + 1,)`` int64 class index of each of ``names``, -1 for a name that is not the name of a
    class with ground truth (a repeated class name: its last index); the extra last entry, -1,
    answers the code -1 of a missing name. A submission repeats a few hundred names, so each
    distinct name is looked up once."""
    with_gt = set(np.asarray(labels_with_gt, dtype=np.int64).tolist())
    index_of_name = {name: i for i, name in enumerate(class_names) if i in with_gt}
    return np.array([index_of_name.get(name, -1) for name in names] + [-1], dtype=np.int64)


def _unknown_label_message(name, video_id, subset: str | None, count: int) -> str:
    return (f"predicted label '{name}' (video {video_id}) has no ground truth in subset '{subset}'; "
            f"{count} prediction(s) have such labels")


def ek100_labels(
    frame: pd.DataFrame, task: str, num_nouns: int, action_columns: tuple[str, str]
) -> np.ndarray:
    """Integer label of each row for an EK100 task; action id = verb * num_nouns + noun."""
    columns = {"verb": ("verb",), "noun": ("noun",), "action": action_columns}.get(task, ())
    return _ek100_task_labels({column: frame[column].to_numpy(np.int64) for column in columns}, task, num_nouns,
                              action_columns)


def _ek100_task_labels(
    ids: dict[str, np.ndarray], task: str, num_nouns: int, action_columns: tuple[str, str]
) -> np.ndarray:
    """``(N,)`` int64 label for an EK100 task from ``ids``: column name -> ``(N,)`` int64 class ids."""
    if task == "verb":
        return ids["verb"]
    if task == "noun":
        return ids["noun"]
    if task == "action":
        verb_column, noun_column = action_columns
        return ids[verb_column] * num_nouns + ids[noun_column]
    raise ValueError(f"unknown EK100 task '{task}', expected one of {EK100_TASKS}")


def evaluate_ek100(
    ground_truth: pd.DataFrame,
    predictions: pd.DataFrame,
    num_nouns: int,
    tiou_thresholds: Sequence[float] | None = None,
    subset: str | None = None,
    verb_names: Sequence[str] | None = None,
    noun_names: Sequence[str] | None = None,
    workers: int | None = None,
) -> dict[str, DetectionResult]:
    """EPIC-Kitchens-100 action detection average mAP for the verb, noun and action tasks.

    Args:
        ground_truth: segment table with ``video_id, start, end, verb, noun`` (seconds, ints).
        predictions: ``video_id, start, end, score, verb, noun, action_verb, action_noun``; the action
            task reads its label from ``action_verb, action_noun`` (the submission's ``"v,n"``
            string), the verb and noun tasks from ``verb`` and ``noun``.
        num_nouns: the noun class count (300 for EK100); action id = verb * num_nouns + noun.
        tiou_thresholds: default 0.1:0.1:0.5.
        subset: if given and ``ground_truth`` has a ``subset`` column, only those rows count.
        verb_names, noun_names: class names for the per-class tables (ids when absent).
        workers: scoring processes (:func:`evaluate_ek100_columns`); None: by size.

    Predictions of a label without ground truth are dropped, as the protocol says. (The official
    code leaves such labels unmapped, so one can alias onto the index of another class; dropping
    them is what that code intends and what a correct evaluation needs.)

    Returns:
        ``{"verb": result, "noun": result, "action": result}``.
    """
    ground_truth = _filter_subset(ground_truth, subset)
    gt_video, pred_video = _video_codes(ground_truth["video_id"], predictions["video_id"])
    unlabelled_gt = SegmentColumns(np.zeros(len(ground_truth), np.int64), gt_video,
                                   ground_truth[["start", "end"]].to_numpy(np.float64))
    unlabelled = SegmentColumns(np.zeros(len(predictions), np.int64), pred_video,
                                predictions[["start", "end"]].to_numpy(np.float64),
                                predictions["score"].to_numpy(np.float64))
    return evaluate_ek100_columns(
        unlabelled_gt, {column: ground_truth[column].to_numpy(np.int64) for column in ("verb", "noun")},
        unlabelled, {column: predictions[column].to_numpy(np.int64) for column in EK100_PREDICTION_IDS},
        num_nouns, tiou_thresholds, verb_names, noun_names, workers,
    )


def evaluate_ek100_columns(
    ground_truth: SegmentColumns,
    gt_ids: dict[str, np.ndarray],
    predictions: SegmentColumns,
    pred_ids: dict[str, np.ndarray],
    num_nouns: int,
    tiou_thresholds: Sequence[float] | None = None,
    verb_names: Sequence[str] | None = None,
    noun_names: Sequence[str] | None = None,
    workers: int | None = None,
) -> dict[str, DetectionResult]:
    """:func:`evaluate_ek100` of columns: the evaluated ground truth (already of the subset) with its
    ``verb, noun`` ids, the predictions with their ``verb, noun, action_verb, action_noun`` ids
    (``(G,)`` and ``(N,)`` int64; the columns' ``label`` is not read: each task sets its own).
    ``workers``: scoring processes, each scoring whole tasks (None: one per
    :data:`PREDICTIONS_PER_PART` predictions and usable CPU, at most 3); the same results for any."""
    thresholds = EK100_TIOU_THRESHOLDS if tiou_thresholds is None else np.asarray(tiou_thresholds)

    def score_task(task: str) -> DetectionResult:
        gt_labels = _ek100_task_labels(gt_ids, task, num_nouns, ("verb", "noun"))
        pred_labels = _ek100_task_labels(pred_ids, task, num_nouns, ("action_verb", "action_noun"))
        keep = np.isin(pred_labels, gt_labels)
        result = average_precision_of_columns(replace(ground_truth, label=gt_labels),
                                              replace(predictions.rows(keep), label=pred_labels[keep]), thresholds,
                                              workers=1)
        result.class_names = [_ek100_class_name(task, label, num_nouns, verb_names, noun_names)
                              for label in result.class_labels]
        return result

    num_parts = default_parts(len(predictions), PREDICTIONS_PER_PART) if workers is None else workers
    task_parts = _EK100_TASK_PARTS[max(1, min(num_parts, len(EK100_TASKS)))]
    scored: dict[str, DetectionResult] = {}
    for part in run_in_parts(lambda part, _: {task: score_task(task) for task in task_parts[part]}, len(task_parts)):
        scored.update(part)
    return {task: scored[task] for task in EK100_TASKS}


# EK100's tasks split over processes: whole tasks, not classes (a task's matching walks every level
# of its (class, video) groups in each part, so splitting its classes saves nothing). The verb task
# costs most (97 classes: the largest groups), then the noun task; measured 0.15 / 0.11 / 0.07 s on
# 276,000 predictions.
_EK100_TASK_PARTS = {1: [EK100_TASKS], 2: [("verb",), ("noun", "action")], 3: [(task,) for task in EK100_TASKS]}


def _ek100_class_name(
    task: str, label: int, num_nouns: int, verb_names: Sequence[str] | None, noun_names: Sequence[str] | None
) -> str:
    def name(names: Sequence[str] | None, index: int) -> str:
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    if task == "verb":
        return name(verb_names, int(label))
    if task == "noun":
        return name(noun_names, int(label))
    verb, noun = divmod(int(label), num_nouns)
    return f"{name(verb_names, verb)} {name(noun_names, noun)}"
