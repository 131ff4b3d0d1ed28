"""Leaderboard submission files: entries, the whole file, validation, an atomic write.

Formats (DESIGN.md "File formats"), seconds:

* HACS / ActivityNet: ``{"version", "external_data", "results": {video_id: [{"label": class name,
  "score", "segment": [start, end]}, ...]}}``;
* EK100 action detection: ``{"version": "0.2", "challenge": "action_detection", "sls_pt",
  "sls_tl", "sls_td", "results": {video_id: [{"verb": int, "noun": int, "action": "v,n",
  "score", "segment": [start, end]}, ...]}}``.

A submission is checked by the evaluation package's validator (the one the eval stage and
``python -m evaluation`` use) before anything is written, and written through a temporary
file renamed over the target, so an interrupted write never leaves a half file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from evaluation.submission import SubmissionError, ek100_predictions, hacs_predictions
from localize.detections import Detections

HACS_VERSION = "VERSION 1.3"  # the ActivityNet / HACS evaluation code's version string
EK100_VERSION = "0.2"
EK100_CHALLENGE = "action_detection"


def hacs_entries(detections: Detections, class_names: list[str]) -> list[dict]:
    """One video's HACS entries ``{"label", "score", "segment"}``, in the detections' order."""
    return [{"label": class_names[label], "score": score, "segment": segment}
            for label, score, segment in zip(detections.classes["label"].tolist(), detections.scores.tolist(),
                                             detections.segments_sec.tolist())]


def ek100_entries(detections: Detections) -> list[dict]:
    """One video's EK100 entries ``{"verb", "noun", "action": "v,n", "score", "segment"}``."""
    return [{"verb": verb, "noun": noun, "action": f"{verb},{noun}", "score": score, "segment": segment}
            for verb, noun, score, segment in zip(detections.classes["verb"].tolist(),
                                                  detections.classes["noun"].tolist(),
                                                  detections.scores.tolist(),
                                                  detections.segments_sec.tolist())]


def hacs_submission(results: dict[str, list[dict]], external_data_used: bool,
                    external_data_details: str) -> dict:
    """The whole HACS file around per-video entries (``external_data`` as ActivityNet asks for it)."""
    return {
        "version": HACS_VERSION,
        "external_data": {"used": bool(external_data_used), "details": external_data_details},
        "results": results,
    }


def ek100_submission(results: dict[str, list[dict]], sls_pt: int, sls_tl: int, sls_td: int) -> dict:
    """The whole EK100 file around per-video entries; ``sls_*`` are the self-declared supervision levels."""
    return {
        "version": EK100_VERSION,
        "challenge": EK100_CHALLENGE,
        "sls_pt": int(sls_pt),
        "sls_tl": int(sls_tl),
        "sls_td": int(sls_td),
        "results": results,
    }


def validate_submission(submission: dict, style: str, classes: dict[str, list[str]], source: str) -> None:
    """Run the evaluation package's validator; raises ``evaluation.submission.SubmissionError``.

    Args:
        submission: the file's content.
        style: "hacs" or "ek100".
        classes: head -> class names (EK100: the verb and noun counts bound the ids; HACS: labels
            must be among the names).
        source: the file name, for messages.
    """
    if style == "hacs":
        predictions = hacs_predictions(submission, source)
        unknown = sorted(set(predictions["label_name"]) - set(classes["label"]))
        if unknown:
            raise SubmissionError(f"{source}: labels {unknown[:5]} are not class names of the classifier")
    elif style == "ek100":
        ek100_predictions(submission, len(classes["verb"]), len(classes["noun"]), source)
    else:
        raise ValueError(f"validate_submission: unknown style {style!r}, expected 'hacs' or 'ek100'")


def write_json_atomic(content: dict, path: str | Path) -> None:
    """Write JSON to ``path`` via ``<path>.tmp``, fsync, and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def write_submission(submission: dict, path: str | Path, style: str, classes: dict[str, list[str]]) -> None:
    """Validate, then write atomically. Nothing is written when validation fails."""
    validate_submission(submission, style, classes, source=str(path))
    write_json_atomic(submission, path)
