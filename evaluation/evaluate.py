"""From ground truth + a submission or proposal file to results, the terminal tables and
metrics.json; shared by the command line (``python -m evaluation``) and the pipeline's eval stage.
Nothing here imports matplotlib: :mod:`evaluation.report` (plots) is imported only when a report
is asked for.

``metrics.json`` (DESIGN.md), fractions in [0, 1]:

* HACS: ``{"tiou_thresholds": [...], "mAP": [...], "average_mAP": x, "per_class": {name: AP}}``
  (per-class AP averaged over the thresholds);
* EK100: that record under each of ``"verb"``, ``"noun"``, ``"action"``;
* proposals: ``{"proposals": {"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}}`` (merged with the above
  by the eval stage).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data.annotations import Annotations
from evaluation.detection import DetectionResult, evaluate_ek100, evaluate_hacs
from evaluation.proposal import ProposalResult, average_recall
from formats.proposals import load_proposals
from formats.submission import load_ek100_submission, load_hacs_submission
from runstate import atomic

STYLES = ("hacs", "ek100")
HACS_HEAD = "label"  # the single head of HACS-style annotations (Annotations.classes key)


@dataclass
class DetectionEvaluation:
    """Everything a report needs about one scored submission.

    Attributes:
        style: ``"hacs"`` or ``"ek100"``.
        results: task -> result; HACS has the one task ``"label"``, EK100 ``verb``, ``noun``, ``action``.
        ground_truth: ``video_id, start, end, name`` of the evaluated segments (name of the class;
            for EK100 the action, "verb noun").
        predictions: ``video_id, start, end, score, name`` of every prediction (same naming).
    """

    style: str
    results: dict[str, DetectionResult]
    ground_truth: pd.DataFrame
    predictions: pd.DataFrame

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


def evaluate_detections(
    style: str,
    annotations: Annotations,
    submission_path: str | Path,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
) -> DetectionEvaluation:
    """Validate and score a detection submission file against ``annotations``.

    Args:
        style: ``"hacs"`` (labels are class names) or ``"ek100"`` (verb/noun/action ids).
        annotations: the ground truth; for EK100 ``classes["verb"]``/``classes["noun"]`` set the class
            counts used to validate ids and the action id ``verb * num_nouns + noun``.
        submission_path: the submission JSON.
        subset: evaluated subset of the ground truth.
        tiou_thresholds: ``None`` or empty for the dataset's protocol.
    """
    thresholds = list(tiou_thresholds) if tiou_thresholds else None
    segments = _subset_segments(annotations, subset)
    if style == "hacs":
        class_names = annotations.classes[HACS_HEAD]
        predictions = load_hacs_submission(submission_path)
        result = evaluate_hacs(segments, class_names, predictions, subset=subset, tiou_thresholds=thresholds)
        gt_names = [class_names[label] for label in segments["label"]]
        return DetectionEvaluation(
            style,
            {HACS_HEAD: result},
            segments[["video_id", "start", "end"]].assign(name=gt_names),
            predictions[["video_id", "start", "end", "score"]].assign(name=predictions["label_name"]),
        )
    if style == "ek100":
        verb_names, noun_names = annotations.classes["verb"], annotations.classes["noun"]
        predictions = load_ek100_submission(submission_path, len(verb_names), len(noun_names))
        results = evaluate_ek100(segments, predictions, len(noun_names), thresholds, subset,
                                 verb_names, noun_names)
        return DetectionEvaluation(
            style,
            results,
            segments[["video_id", "start", "end"]].assign(
                name=_action_names(segments["verb"], segments["noun"], verb_names, noun_names)
            ),
            predictions[["video_id", "start", "end", "score"]].assign(
                name=_action_names(predictions["action_verb"], predictions["action_noun"], verb_names,
                                   noun_names)
            ),
        )
    raise ValueError(f"unknown dataset style '{style}', expected one of {STYLES}")


def _action_names(
    verbs: pd.Series, nouns: pd.Series, verb_names: Sequence[str], noun_names: Sequence[str]
) -> np.ndarray:
    """``(N,)`` object array: ``"<verb name> <noun name>"`` of each row; each distinct (verb, noun)
    pair is formatted once (a submission repeats a few thousand of them)."""
    action_ids = verbs.to_numpy(np.int64) * len(noun_names) + nouns.to_numpy(np.int64)
    codes, distinct = pd.factorize(action_ids)
    names = [f"{verb_names[action // len(noun_names)]} {noun_names[action % len(noun_names)]}"
             for action in distinct.tolist()]
    return np.array(names, dtype=object)[codes] if names else np.zeros(len(codes), dtype=object)


def evaluate_proposal_file(
    annotations: Annotations,
    proposals_path: str | Path,
    subset: str | None = "validation",
    tiou_thresholds: Sequence[float] | None = None,
    max_avg_proposals: float = 100,
) -> ProposalResult:
    """AR@AN of a proposal file against every ground-truth segment of the subset (class-agnostic)."""
    segments = _subset_segments(annotations, subset)
    proposals = load_proposals(proposals_path)
    return average_recall(segments, proposals, list(tiou_thresholds) if tiou_thresholds else None,
                          max_avg_proposals)


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
