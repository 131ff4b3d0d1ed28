"""Plainly written loop-by-loop versions of the metrics, used only by the tests and bench/eval.py
to check the vectorized code. Slow on purpose: one Python step per prediction, per ground-truth
segment, per threshold, exactly as the protocol is worded. Seconds everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def tiou(segment_a: Sequence[float], segment_b: Sequence[float]) -> float:
    """tIoU of two ``[start, end]`` segments; 0 when the union is not positive."""
    intersection = max(0.0, min(segment_a[1], segment_b[1]) - max(segment_a[0], segment_b[0]))
    union = (segment_b[1] - segment_b[0]) + (segment_a[1] - segment_a[0]) - intersection
    return intersection / union if union > 0 else 0.0


def interpolated_ap(precision: list[float], recall: list[float]) -> float:
    """VOC all-point interpolated AP from precision/recall lists in rank order."""
    padded_precision = [0.0] + list(precision) + [0.0]
    padded_recall = [0.0] + list(recall) + [1.0]
    for i in range(len(padded_precision) - 2, -1, -1):
        padded_precision[i] = max(padded_precision[i], padded_precision[i + 1])
    ap = 0.0
    for i in range(1, len(padded_recall)):
        if padded_recall[i] != padded_recall[i - 1]:
            ap += (padded_recall[i] - padded_recall[i - 1]) * padded_precision[i]
    return ap


def official_interpolated_ap(precision: list[float], recall: list[float]) -> float:
    """The same AP with the official ``interpolated_prec_rec`` arithmetic (ActivityNet's
    ``Evaluation/utils.py``, which the EK100 code reuses): numpy arrays padded with 0 / 1, the
    envelope by a backward loop, and one ``np.sum`` over the ranks where recall changes. Equal to
    :func:`interpolated_ap` up to rounding; the vectorized code matches this one bit for bit."""
    padded_precision = np.concatenate([[0.0], np.asarray(precision, dtype=np.float64), [0.0]])
    padded_recall = np.concatenate([[0.0], np.asarray(recall, dtype=np.float64), [1.0]])
    for i in range(len(padded_precision) - 2, -1, -1):
        padded_precision[i] = max(padded_precision[i], padded_precision[i + 1])
    steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1]) + 1
    return float(np.sum((padded_recall[steps] - padded_recall[steps - 1]) * padded_precision[steps]))


def class_average_precision(
    ground_truth: list[tuple[str, float, float]],
    predictions: list[tuple[str, float, float, float]],
    tiou_thresholds: Sequence[float],
    interpolate=interpolated_ap,
) -> list[float]:
    """AP of one class at each threshold.

    Args:
        ground_truth: ``(video_id, start, end)`` in ground-truth order.
        predictions: ``(video_id, start, end, score)`` in input order.
        interpolate: ``(precision list, recall list) -> AP``, in rank order.
    """
    if not predictions:
        return [0.0] * len(tiou_thresholds)
    ranked = sorted(predictions, key=lambda p: -p[3])  # Python's sort is stable
    gt_by_video: dict[str, list[int]] = {}
    for index, (video_id, _, _) in enumerate(ground_truth):
        gt_by_video.setdefault(video_id, []).append(index)

    ap = []
    for threshold in tiou_thresholds:
        locked = [False] * len(ground_truth)
        outcomes = []
        for video_id, start, end, _ in ranked:
            is_tp = False
            candidates = gt_by_video.get(video_id, [])
            overlaps = {j: tiou((start, end), ground_truth[j][1:]) for j in candidates}
            # highest tIoU first; equal tIoU: later ground truth first
            for j in sorted(candidates, key=lambda j: (overlaps[j], j), reverse=True):
                if overlaps[j] < threshold:
                    break
                if locked[j]:
                    continue
                locked[j] = True
                is_tp = True
                break
            outcomes.append(is_tp)
        tp = fp = 0
        precision, recall = [], []
        for is_tp in outcomes:
            tp += is_tp
            fp += not is_tp
            precision.append(tp / (tp + fp))
            recall.append(tp / len(ground_truth))
        ap.append(interpolate(precision, recall))
    return ap


def average_precision_table(
    ground_truth: pd.DataFrame,
    predictions: pd.DataFrame,
    tiou_thresholds: Sequence[float],
    interpolate=interpolated_ap,
) -> tuple[list[int], np.ndarray]:
    """Loop version of :func:`evaluation.detection.average_precision` (``interpolate``: see
    :func:`class_average_precision`).

    Returns:
        ``(class_labels ascending, ap (T, C))``; predictions of labels without ground truth ignored.
    """
    gt_of_label: dict[int, list] = {}
    for row in ground_truth.itertuples():
        segment = (str(row.video_id), float(row.start), float(row.end))
        gt_of_label.setdefault(int(row.label), []).append(segment)
    preds_of_label: dict[int, list] = {}
    for row in predictions.itertuples():
        preds_of_label.setdefault(int(row.label), []).append(
            (str(row.video_id), float(row.start), float(row.end), float(row.score))
        )
    class_labels = sorted(gt_of_label)
    ap = np.zeros((len(tiou_thresholds), len(class_labels)))
    for column, label in enumerate(class_labels):
        class_predictions = preds_of_label.get(label, [])
        ap[:, column] = class_average_precision(gt_of_label[label], class_predictions, tiou_thresholds,
                                                interpolate)
    return class_labels, ap


def average_recall_curve(
    ground_truth: pd.DataFrame,
    proposals: pd.DataFrame,
    tiou_thresholds: Sequence[float],
    max_avg_proposals: float = 100,
) -> tuple[np.ndarray, np.ndarray]:
    """Loop version of the ActivityNet proposal protocol.

    Returns:
        ``(recall (T, 100), average number of proposals per video (100,))``.
    """
    videos = list(dict.fromkeys(str(v) for v in ground_truth["video_id"]))
    ratio = max_avg_proposals * len(videos) / len(proposals)
    gt_of = {v: [] for v in videos}
    for row in ground_truth.itertuples():
        gt_of[str(row.video_id)].append((float(row.start), float(row.end)))
    props_of: dict[str, list[tuple[float, float, float]]] = {}
    for row in proposals.itertuples():
        proposal = (float(row.start), float(row.end), float(row.score))
        props_of.setdefault(str(row.video_id), []).append(proposal)

    kept_of = {}
    total_kept = 0
    for video in videos:
        ranked = sorted(props_of.get(video, []), key=lambda p: -p[2])
        keep = min(int(len(ranked) * ratio), len(ranked))
        kept_of[video] = ranked[:keep]
        total_kept += keep

    fractions = np.arange(1, 101) / 100.0 * (max_avg_proposals * float(len(videos)) / total_kept)
    num_gt = sum(len(gt_of[v]) for v in videos)
    recall = np.zeros((len(tiou_thresholds), 100))
    for t, threshold in enumerate(tiou_thresholds):
        for j, fraction in enumerate(fractions):
            matched = 0
            for video in videos:
                kept = kept_of[video]
                count = min(int(len(kept) * fraction), len(kept))
                for gt in gt_of[video]:
                    if any(tiou(p[:2], gt) >= threshold for p in kept[:count]):
                        matched += 1
            recall[t, j] = matched / num_gt
    return recall, fractions * (float(total_kept) / len(videos))
