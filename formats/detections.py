"""``detections.csv``: detections as a table anyone can open (the detect stage's plain output).

One row per detection, sorted by video, then by score (best first):

* HACS style: ``video_id, start_sec, end_sec, label, score``;
* EK100 style: ``video_id, start_sec, end_sec, verb_id, verb, noun_id, noun, action, action_name, score``
  (``action`` is the leaderboard's ``"verb_id,noun_id"``, ``action_name`` ``"verb noun"``).

Built from submission entries (``formats.submission``) and class names.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from runstate import atomic

HACS_COLUMNS = ("video_id", "start_sec", "end_sec", "label", "score")
EK100_COLUMNS = ("video_id", "start_sec", "end_sec", "verb_id", "verb", "noun_id", "noun", "action", "action_name",
                 "score")


def detection_rows(results: dict[str, list[dict]], style: str, classes: dict[str, list[str]]) -> list[tuple]:
    """Submission entries ``{video_id: [entry, ...]}`` -> CSV rows, sorted by video then score."""
    rows = []
    for video_id in sorted(results):
        entries = sorted(results[video_id], key=lambda entry: -entry["score"])
        for entry in entries:
            start, end = entry["segment"]
            if style == "hacs":
                rows.append((video_id, start, end, entry["label"], entry["score"]))
            else:
                verb, noun = int(entry["verb"]), int(entry["noun"])
                verb_name, noun_name = classes["verb"][verb], classes["noun"][noun]
                rows.append((video_id, start, end, verb, verb_name, noun, noun_name, entry["action"],
                             f"{verb_name} {noun_name}", entry["score"]))
    return rows


def write_detections_csv(path: str | Path, results: dict[str, list[dict]], style: str,
                         classes: dict[str, list[str]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(HACS_COLUMNS if style == "hacs" else EK100_COLUMNS)
    writer.writerows(detection_rows(results, style, classes))
    atomic.write_text(path, text.getvalue())


def read_detections_csv(path: str | Path) -> list[dict]:
    """The rows as dicts (numbers as floats / ints)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("start_sec", "end_sec", "score"):
            row[key] = float(row[key])
        for key in ("verb_id", "noun_id"):
            if key in row:
                row[key] = int(row[key])
    return rows
