"""From ground truth + a submission or proposal file to results, the terminal tables and
metrics.json; shared by the command line (``python -m evaluation``) and the pipeline's eval stage.
Nothing here imports matplotlib: :mod:`evaluation.report` (plots) is imported only when a report
is asked for. Files are scored as numpy columns; the tables a report draws from are made only when
it reads them, so that the command line on HACS files never imports pandas either.

``metrics.json`` (DESIGN.md), fractions in [0, 1]:

* HACS: ``{"tiou_thresholds": [...], "mAP": [...], "average_mAP": x, "per_class": {name: AP}}``
  (per-class AP averaged over the thresholds);
* EK100: that record under each of ``"verb"``, ``"noun"``, ``"action"``;
* proposals: ``{"proposals": {"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}}`` (merged with the above
  by the eval stage).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from data.ek100_csv import Ek100GroundTruth
from data.hacs_json import HacsGroundTruth
from evaluation.detection import (
    DetectionResult,
    SegmentColumns,
    evaluate_ek100_columns,
    evaluate_hacs_columns,
)
from evaluation.proposal import ProposalResult, average_recall_of_columns
from formats.proposals import load_proposal_columns
from formats.submission import PredictionColumns, load_ek100_columns, load_hacs_columns
from runstate import atomic

if TYPE_CHECKING:
    import pandas as pd

    from data.annotations import Annotations

STYLES = ("hacs", "ek100")
HACS_HEAD = "label"  # the single head of HACS-style annotations (Annotations.classes key)

# The ground truth: the dataset's annotations, or a HACS or EK100 file's columns (what the command
# line reads: it then never builds a pandas table).
GroundTruth = Union["Annotations", HacsGroundTruth, Ek100GroundTruth]


class DetectionEvaluation:
    """Everything a report needs about one scored submission.

    Attributes:
        style: ``"hacs"`` or ``"ek100"``.
        results: task -> result; HACS has the one task ``"label"``, EK100 ``verb``, ``noun``, ``action``.
        ground_truth: ``video_id, start, end, name`` of the evaluated segments (name of the class;
            for EK100 the action, "verb noun").
        predictions: ``video_id, start, end, score, name`` of every prediction (same naming).

    The two tables are given as tables or as functions of no argument that make them: then they
    are made when first read (by a report), not for the metrics.
    """

    def __init__(
        self,
        style: str,
        results: dict[str, DetectionResult],
        ground_truth: pd.DataFrame | Callable[[], pd.DataFrame],
        predictions: pd.DataFrame | Callable[[], pd.DataFrame],
    ) -> None:
        self.style, self.results = style, results
        self._tables = {"ground_truth": ground_truth, "predictions": predictions}

    @property
    def ground_truth(self) -> pd.DataFrame:
        return self._table("ground_truth")

    @property
    def predictions(self) -> pd.DataFrame:
        return self._table("predictions")

    def _table(self, name: str) -> pd.DataFrame:
        if callable(self._tables[name]):
            self._tables[name] = self._tables[name]()
        return self._tables[name]

    def to_metrics(self) -> dict:
        if self.style == "hacs":
            return self.results[HACS_HEAD].to_metrics()
        return {task: result.to_metrics() for task, result in self.results.items()}


def _subset_segments(annotations: Annotations, subset: str | None) -> pd.DataFrame:
    segments = annotations.segments
    if subset is not None and "subset" in segments.columns:
        segments = segments[segments["subset"] == subset]
    if segments.empty:
        raise ValueError(f"no ground-truth segment in subset '{subset}'")
    return segments.reset_index(drop=True)


def _evaluated_columns(ground_truth: GroundTruth, subset: str | None) -> tuple[SegmentColumns, np.ndarray]:
    """The segments of ``subset`` (every one when None) as columns, ``label`` the annotations'
    ``label``, and ``(V,)`` the video ids by code (V: videos with a segment of the subset, in order
    of first appearance); ValueError when there is none."""
    if isinstance(ground_truth, HacsGroundTruth):
        keep = np.ones(len(ground_truth.labels), dtype=bool) if subset is None else \
            ground_truth.segment_subsets() == subset
        if not keep.any():
            raise ValueError(f"no ground-truth segment in subset '{subset}'")
        index = np.flatnonzero(keep)
        segment_video = ground_truth.segment_video[index]
        codes, first = _first_appearance_codes(segment_video)
        return (SegmentColumns(ground_truth.labels[index], codes, ground_truth.segments[index]),
                ground_truth.video_ids[segment_video[first]])
    if isinstance(ground_truth, Ek100GroundTruth):  # every row is of the file's subset
        gt = ground_truth
        if not gt.labelled or not len(gt.segments) or subset not in (None, gt.subset):
            raise ValueError(f"no ground-truth segment in subset '{subset}'")
        return SegmentColumns(gt.labels, gt.segment_video, gt.segments), gt.video_ids
    segments = _subset_segments(ground_truth, subset)
    codes, video_ids = segments["video_id"].astype(str).factorize()
    return SegmentColumns(segments["label"].to_numpy(np.int64), codes.astype(np.int64),
                          segments[["start", "end"]].to_numpy(np.float64)), np.asarray(video_ids, dtype=object)


def _ek100_class_columns(ground_truth: GroundTruth, subset: str | None) -> dict[str, np.ndarray]:
    """``{"verb": (S,), "noun": (S,)}`` int64 class ids of the segments :func:`_evaluated_columns` gives."""
    if isinstance(ground_truth, Ek100GroundTruth):
        return {"verb": ground_truth.verbs, "noun": ground_truth.nouns}
    segments = _subset_segments(ground_truth, subset)
    return {head: segments[head].to_numpy(np.int64) for head in ("verb", "noun")}


def _first_appearance_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (N,), first (K,))``: ``values`` ``(N,)`` int numbered by first appearance (as
    ``pd.factorize`` numbers them), and the index of each distinct value's first occurrence."""
    _, first, inverse = np.unique(values, return_index=True, return_inverse=True)
    order = np.argsort(first)  # distinct values by first appearance
    rank = np.empty(len(first), dtype=np.int64)
    rank[order] = np.arange(len(first))
    return rank[inverse], first[order]


def evaluate_detections(
    style: str,
    ground_truth: GroundTruth,
    submission_path: str | Path,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    workers: int | None = None,
) -> DetectionEvaluation:
    """Validate and score a detection submission file against the ground truth.

    Args:
        style: ``"hacs"`` (labels are class names) or ``"ek100"`` (verb/noun/action ids).
        ground_truth: the annotations (EK100: ``classes["verb"]``/``classes["noun"]`` set the class
            counts used to validate ids and the action id ``verb * num_nouns + noun``), or, for HACS,
            the file's columns (:func:`data.hacs_json.read_hacs_json`).
        submission_path: the submission JSON.
        subset: evaluated subset of the ground truth.
        tiou_thresholds: ``None`` or empty for the dataset's protocol.
        workers: processes to read and to score in (``runstate.parts``); None: by the file's size
            and the usable CPUs. The numbers are the same for any count.
    """
    if style not in STYLES:
        raise ValueError(f"unknown dataset style '{style}', expected one of {STYLES}")
    _evaluated_columns(ground_truth, subset)  # a subset without ground truth is said before the file is read
    if style == "hacs":
        predictions = load_hacs_columns(submission_path, workers)
    else:
        predictions = load_ek100_columns(submission_path, len(ground_truth.classes["verb"]),
                                         len(ground_truth.classes["noun"]), workers)
    return score_detections(style, ground_truth, predictions, subset, tiou_thresholds, workers)


def score_detections(
    style: str,
    ground_truth: GroundTruth,
    predictions: PredictionColumns,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    workers: int | None = None,
) -> DetectionEvaluation:
    """:func:`evaluate_detections` of a submission already read (``formats.submission.load_*_columns``)."""
    thresholds = list(tiou_thresholds) if tiou_thresholds else None
    if style == "hacs":
        class_names = ground_truth.class_names if isinstance(ground_truth, HacsGroundTruth) \
            else ground_truth.classes[HACS_HEAD]
        segments, video_ids = _evaluated_columns(ground_truth, subset)
        result = evaluate_hacs_columns(segments, video_ids, class_names, predictions, subset, thresholds, workers)
        return DetectionEvaluation(
            style,
            {HACS_HEAD: result},
            lambda: _segment_table(segments, video_ids, np.array(class_names, dtype=object)[segments.label]),
            lambda: _prediction_table(predictions, predictions.label_name_column()),
        )
    if style == "ek100":
        verb_names, noun_names = ground_truth.classes["verb"], ground_truth.classes["noun"]
        segments, video_ids = _evaluated_columns(ground_truth, subset)
        gt_classes = _ek100_class_columns(ground_truth, subset)
        unlabelled_gt = SegmentColumns(np.zeros(len(segments.label), np.int64), segments.video, segments.segments)
        unlabelled = SegmentColumns(np.zeros(len(predictions), np.int64), predictions.video_codes(video_ids),
                                    predictions.segments, predictions.score)
        results = evaluate_ek100_columns(
            unlabelled_gt, gt_classes, unlabelled, predictions.class_ids, len(noun_names), thresholds, verb_names,
            noun_names, workers,
        )
        return DetectionEvaluation(
            style,
            results,
            lambda: _segment_table(segments, video_ids, _action_names(gt_classes["verb"], gt_classes["noun"],
                                                                      verb_names, noun_names)),
            lambda: _prediction_table(predictions, _action_names(
                predictions.class_ids["action_verb"], predictions.class_ids["action_noun"], verb_names, noun_names)),
        )
    raise ValueError(f"unknown dataset style '{style}', expected one of {STYLES}")


def _segment_table(segments: SegmentColumns, video_ids: np.ndarray, names: np.ndarray) -> pd.DataFrame:
    """``video_id, start, end, name`` of evaluated segments (``names`` ``(G,)`` object)."""
    import pandas as pd  # here: only a report reads the tables

    return pd.DataFrame({"video_id": video_ids[segments.video], "start": segments.segments[:, 0],
                         "end": segments.segments[:, 1], "name": names})


def _prediction_table(predictions: PredictionColumns, names: np.ndarray) -> pd.DataFrame:
    """``video_id, start, end, score, name`` of every prediction (``names`` ``(N,)`` object)."""
    import pandas as pd  # here: only a report reads the tables

    return pd.DataFrame({"video_id": predictions.video_id_column(), "start": predictions.segments[:, 0],
                         "end": predictions.segments[:, 1], "score": predictions.score, "name": names})


def _action_names(verbs, nouns, verb_names: Sequence[str], noun_names: Sequence[str]) -> np.ndarray:
    """``(N,)`` object array: ``"<verb name> <noun name>"`` of each row (``verbs``, ``nouns``: ``(N,)``
    ints); each distinct (verb, noun) pair is formatted once (a submission repeats a few thousand)."""
    action_ids = np.asarray(verbs, dtype=np.int64) * len(noun_names) + np.asarray(nouns, dtype=np.int64)
    distinct, codes = np.unique(action_ids, return_inverse=True)
    names = [f"{verb_names[action // len(noun_names)]} {noun_names[action % len(noun_names)]}"
             for action in distinct.tolist()]
    return np.array(names, dtype=object)[codes] if names else np.zeros(len(codes), dtype=object)


def evaluate_proposal_file(
    ground_truth: GroundTruth,
    proposals_path: str | Path,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    max_avg_proposals: float = 100,
    workers: int | None = None,
) -> ProposalResult:
    """AR@AN of a proposal file against every ground-truth segment of the subset (class-agnostic);
    the file is read in ``workers`` processes (None: by its size, see ``formats.submission.read_typed``)."""
    _evaluated_columns(ground_truth, subset)  # a subset without ground truth is said before the file is read
    return score_proposals(ground_truth, load_proposal_columns(proposals_path, workers), subset, tiou_thresholds,
                           max_avg_proposals, workers)


def score_proposals(
    ground_truth: GroundTruth,
    proposals: PredictionColumns,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    max_avg_proposals: float = 100,
    workers: int | None = None,
) -> ProposalResult:
    """:func:`evaluate_proposal_file` of a proposal file already read (``formats.proposals``)."""
    segments, video_ids = _evaluated_columns(ground_truth, subset)
    return average_recall_of_columns(
        segments.video, segments.segments, len(video_ids), proposals.video_codes(video_ids), proposals.segments,
        proposals.score, list(tiou_thresholds) if tiou_thresholds else None, max_avg_proposals, workers,
    )


def write_metrics(path: str | Path, metrics: dict) -> None:
    """Write ``metrics`` as JSON atomically (``runstate.atomic``)."""
    atomic.write_text(path, json.dumps(metrics, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# Tables in percent, for the terminal (and, as Markdown, for report.md)


def _task_title(task: str) -> str:
    return "mAP" if task == HACS_HEAD else task


def detection_table(results: dict[str, DetectionResult], markdown: bool = False) -> str:
    """mAP (%) per threshold and the average, one row per task."""
    thresholds = next(iter(results.values())).tiou_thresholds
    header = ["task"] + [f"{t:.2f}" for t in thresholds] + ["avg"]
    rows = [[_task_title(task)] + [f"{100 * m:.2f}" for m in result.mAP] + [f"{100 * result.average_mAP:.2f}"]
            for task, result in results.items()]
    return _table(header, rows, markdown)


def proposal_table(result: ProposalResult, markdown: bool = False) -> str:
    """AR@n and AUC (%) in one row."""
    metrics = result.to_metrics()
    return _table(list(metrics), [[f"{100 * value:.2f}" for value in metrics.values()]], markdown)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header] + rows
    )
