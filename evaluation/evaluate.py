"""From ground truth + a submission or proposal file to results and metrics.json; shared by the
command line (``python -m evaluation``) and the pipeline's eval stage.

``metrics.json`` (DESIGN.md), fractions in [0, 1]:

* HACS: ``{"tiou_thresholds": [...], "mAP": [...], "average_mAP": x, "per_class": {name: AP}}``
  (per-class AP averaged over the thresholds);
* EK100: that record under each of ``"verb"``, ``"noun"``, ``"action"``;
* proposals: ``{"proposals": {"AR@1", "AR@5", "AR@10", "AR@100", "AUC"}}`` (merged with the above
  by the eval stage).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from data.annotations import Annotations
from evaluation.detection import DetectionResult, evaluate_ek100, evaluate_hacs
from evaluation.proposal import ProposalResult, average_recall
from evaluation.submission import load_ek100_submission, load_hacs_submission, load_proposals

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

        def action_names(verbs: pd.Series, nouns: pd.Series) -> list[str]:
            return [f"{verb_names[v]} {noun_names[n]}" for v, n in zip(verbs, nouns)]

        return DetectionEvaluation(
            style,
            results,
            segments[["video_id", "start", "end"]].assign(
                name=action_names(segments["verb"], segments["noun"])
            ),
            predictions[["video_id", "start", "end", "score"]].assign(
                name=action_names(predictions["action_verb"], predictions["action_noun"])
            ),
        )
    raise ValueError(f"unknown dataset style '{style}', expected one of {STYLES}")


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
    """Write ``metrics`` as JSON atomically (a temporary file in the same folder, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(metrics, stream, indent=2)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
