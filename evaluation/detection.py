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
   over the recall steps) with the class's ground-truth count as the number of positives.
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

Seconds everywhere; the tIoU is :func:`evaluation.tiou.paired_tiou`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from evaluation.tiou import overlapping_pairs, paired_tiou

# The official np.linspace values, bit for bit. They are not all the decimals they print as:
# HACS's "0.9" is 0.8999999999999999 (a tIoU of exactly 0.9 matches it) and EK100's "0.3" is
# 0.30000000000000004 (a tIoU of exactly 0.3 does not match it). Both evaluators behave so.
HACS_TIOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
EK100_TIOU_THRESHOLDS = np.linspace(0.1, 0.5, 5)
EK100_TASKS = ("verb", "noun", "action")

# Candidate pairs are formed for this many predictions at a time, so that memory stays bounded.
_PREDICTIONS_PER_BATCH = 100_000


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
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    if thresholds.ndim != 1 or len(thresholds) == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
        raise ValueError(f"tiou_thresholds must be a non-empty list of values in (0, 1], "
                         f"got {tiou_thresholds}")

    if ground_truth.empty:
        raise ValueError("no ground-truth segment to evaluate against")
    class_labels, gt_class = np.unique(ground_truth["label"].to_numpy(np.int64), return_inverse=True)
    num_classes = len(class_labels)
    pred_labels = predictions["label"].to_numpy(np.int64)
    pred_class = np.searchsorted(class_labels, pred_labels)
    clipped = np.minimum(pred_class, num_classes - 1)
    known = (pred_class < num_classes) & (class_labels[clipped] == pred_labels)
    if not np.all(known):
        raise LabelError(f"prediction label {pred_labels[~known][0]} has no ground truth")

    # One integer id per video, shared by ground truth and predictions.
    video_codes, _ = pd.factorize(
        np.concatenate([ground_truth["video_id"].to_numpy(str), predictions["video_id"].to_numpy(str)])
    )
    gt_video, pred_video = video_codes[: len(ground_truth)], video_codes[len(ground_truth) :]
    gt_segments = ground_truth[["start", "end"]].to_numpy(np.float64)
    pred_segments = predictions[["start", "end"]].to_numpy(np.float64)
    scores = predictions["score"].to_numpy(np.float64)

    # Class by class, score descending; np.lexsort is stable, so equal scores keep input order.
    order = np.lexsort((-scores, pred_class))
    pred_class, pred_video, pred_segments = pred_class[order], pred_video[order], pred_segments[order]

    true_positive = _match(
        gt_class, gt_video, gt_segments, pred_class, pred_video, pred_segments, thresholds
    )  # (T, P), predictions in sorted order

    num_ground_truth = np.bincount(gt_class, minlength=num_classes)
    num_predictions = np.bincount(pred_class, minlength=num_classes)
    class_end = np.cumsum(num_predictions)
    ap = np.zeros((len(thresholds), num_classes))
    for class_index in range(num_classes):  # cheap: a handful of array operations per class
        start = class_end[class_index] - num_predictions[class_index]
        ap[:, class_index] = _interpolated_ap(
            true_positive[:, start : class_end[class_index]], num_ground_truth[class_index]
        )
    return DetectionResult(thresholds, class_labels, ap, num_ground_truth, num_predictions)


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

    # (class, video) group of every segment, as compact integer ids.
    num_videos = int(max(gt_video.max(), pred_video.max())) + 1
    group_keys, group_ids = np.unique(
        np.concatenate([gt_class * num_videos + gt_video, pred_class * num_videos + pred_video]),
        return_inverse=True,
    )
    gt_group, pred_group = group_ids[: len(gt_class)], group_ids[len(gt_class) :]

    # Candidate pairs: same group and tIoU at or above the lowest threshold (the others never match).
    pair_pred, pair_gt, pair_tiou = _candidate_pairs(
        pred_group, gt_group, len(group_keys), pred_segments, gt_segments, thresholds.min()
    )
    if len(pair_pred) == 0:
        return true_positive

    # Level of each prediction with candidates: its rank in its group, in score order.
    candidates = np.unique(pair_pred)  # ascending = score order inside each group
    by_group = np.argsort(pred_group[candidates], kind="stable")
    sorted_groups = pred_group[candidates][by_group]
    first_of_group = np.searchsorted(sorted_groups, sorted_groups, side="left")
    level = np.empty(num_preds, dtype=np.int64)
    level[candidates[by_group]] = np.arange(len(candidates)) - first_of_group

    # Pairs ordered by level, then prediction, then preference (tIoU descending, later ground truth
    # first on equal tIoU).
    pair_level = level[pair_pred]
    pair_order = np.lexsort((-pair_gt, -pair_tiou, pair_pred, pair_level))
    pair_pred, pair_gt, pair_tiou = pair_pred[pair_order], pair_gt[pair_order], pair_tiou[pair_order]
    level_bounds = np.searchsorted(pair_level[pair_order], np.arange(pair_level.max() + 2))

    locked = np.zeros((num_thresholds, len(gt_class)), dtype=bool)
    for begin, end in zip(level_bounds[:-1], level_bounds[1:]):
        preds, gts, tious = pair_pred[begin:end], pair_gt[begin:end], pair_tiou[begin:end]
        # (T, n): pair is usable at threshold t if it reaches t and its ground truth is still free.
        usable = (tious[None, :] >= thresholds[:, None]) & ~locked[:, gts]
        threshold_index, pair_index = np.nonzero(usable)  # row-major: by threshold, then pair order
        owner = preds[pair_index]
        # The first usable pair of each (threshold, prediction) is the preferred free segment.
        is_first = np.ones(len(pair_index), dtype=bool)
        is_first[1:] = (threshold_index[1:] != threshold_index[:-1]) | (owner[1:] != owner[:-1])
        chosen_threshold, chosen_pair = threshold_index[is_first], pair_index[is_first]
        # Predictions of one level are in distinct groups, so they never claim the same segment.
        locked[chosen_threshold, gts[chosen_pair]] = True
        true_positive[chosen_threshold, preds[chosen_pair]] = True
    return true_positive


def _candidate_pairs(
    pred_group: np.ndarray,
    gt_group: np.ndarray,
    num_groups: int,
    pred_segments: np.ndarray,
    gt_segments: np.ndarray,
    min_tiou: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prediction index, ground-truth index, tIoU) of same-group pairs with tIoU >= ``min_tiou``.

    Only temporally overlapping pairs are formed (:func:`evaluation.tiou.overlapping_pairs`), in
    batches of predictions so that memory stays bounded for leaderboard-size inputs.
    """
    kept_pred, kept_gt, kept_tiou = [], [], []
    for begin in range(0, len(pred_group), _PREDICTIONS_PER_BATCH):
        end = min(begin + _PREDICTIONS_PER_BATCH, len(pred_group))
        local_pred, pair_gt = overlapping_pairs(
            pred_group[begin:end], pred_segments[begin:end], gt_group, gt_segments, num_groups
        )
        pair_pred = local_pred + begin
        tiou = paired_tiou(pred_segments[pair_pred], gt_segments[pair_gt])
        keep = tiou >= min_tiou
        kept_pred.append(pair_pred[keep])
        kept_gt.append(pair_gt[keep])
        kept_tiou.append(tiou[keep])
    if not kept_pred:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(kept_pred), np.concatenate(kept_gt), np.concatenate(kept_tiou)


def _interpolated_ap(true_positive: np.ndarray, num_positives: int) -> np.ndarray:
    """All-point interpolated AP of one class at every threshold.

    Args:
        true_positive: ``(T, n)`` bool, predictions in score order.
        num_positives: the class's ground-truth count (> 0).

    Returns:
        ``(T,)`` AP: sum over recall steps of (recall step) x (best precision at or after it).
    """
    num_thresholds = true_positive.shape[0]
    if true_positive.shape[1] == 0:
        return np.zeros(num_thresholds)
    tp_cumsum = np.cumsum(true_positive, axis=1, dtype=np.float64)
    fp_cumsum = np.cumsum(~true_positive, axis=1, dtype=np.float64)
    recall = tp_cumsum / num_positives
    precision = tp_cumsum / (tp_cumsum + fp_cumsum)
    zeros, ones = np.zeros((num_thresholds, 1)), np.ones((num_thresholds, 1))
    # (T, n) -> (T, n + 2): recall 0 before the first prediction, recall 1 / precision 0 after the last
    padded_precision = np.hstack([zeros, precision, zeros])
    padded_recall = np.hstack([zeros, recall, ones])
    # Precision made non-increasing from the right: reverse cumulative maximum along the ranks.
    envelope = np.maximum.accumulate(padded_precision[:, ::-1], axis=1)[:, ::-1]
    recall_step = padded_recall[:, 1:] - padded_recall[:, :-1]  # zero where recall does not change
    return np.sum(recall_step * envelope[:, 1:], axis=1)


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
    labels_with_gt = set(int(label) for label in ground_truth["label"].unique())
    index_of_name = {name: i for i, name in enumerate(class_names) if i in labels_with_gt}
    pred_labels = predictions["label_name"].map(index_of_name)
    unknown = pred_labels.isna().to_numpy()
    if unknown.any():
        row = predictions[unknown].iloc[0]
        raise LabelError(
            f"predicted label '{row['label_name']}' (video {row['video_id']}) has no ground truth in "
            f"subset '{subset}'; {int(unknown.sum())} prediction(s) have such labels"
        )
    scored = predictions.assign(label=pred_labels.to_numpy(np.int64))
    result = average_precision(ground_truth, scored, thresholds)
    result.class_names = [class_names[label] for label in result.class_labels]
    return result


def ek100_labels(
    frame: pd.DataFrame, task: str, num_nouns: int, action_columns: tuple[str, str]
) -> np.ndarray:
    """Integer label of each row for an EK100 task; action id = verb * num_nouns + noun."""
    if task == "verb":
        return frame["verb"].to_numpy(np.int64)
    if task == "noun":
        return frame["noun"].to_numpy(np.int64)
    if task == "action":
        verb_column, noun_column = action_columns
        return frame[verb_column].to_numpy(np.int64) * num_nouns + frame[noun_column].to_numpy(np.int64)
    raise ValueError(f"unknown EK100 task '{task}', expected one of {EK100_TASKS}")


def evaluate_ek100(
    ground_truth: pd.DataFrame,
    predictions: pd.DataFrame,
    num_nouns: int,
    tiou_thresholds: Sequence[float] | None = None,
    subset: str | None = None,
    verb_names: Sequence[str] | None = None,
    noun_names: Sequence[str] | None = None,
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

    Predictions of a label without ground truth are dropped, as the protocol says. (The official
    code leaves such labels unmapped, so one can alias onto the index of another class; dropping
    them is what that code intends and what a correct evaluation needs.)

    Returns:
        ``{"verb": result, "noun": result, "action": result}``.
    """
    thresholds = EK100_TIOU_THRESHOLDS if tiou_thresholds is None else np.asarray(tiou_thresholds)
    ground_truth = _filter_subset(ground_truth, subset)
    results = {}
    for task in EK100_TASKS:
        gt_labels = ek100_labels(ground_truth, task, num_nouns, ("verb", "noun"))
        pred_labels = ek100_labels(predictions, task, num_nouns, ("action_verb", "action_noun"))
        keep = np.isin(pred_labels, gt_labels)
        result = average_precision(
            ground_truth.assign(label=gt_labels),
            predictions[keep].assign(label=pred_labels[keep]),
            thresholds,
        )
        result.class_names = [_ek100_class_name(task, label, num_nouns, verb_names, noun_names)
                              for label in result.class_labels]
        results[task] = result
    return results


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
