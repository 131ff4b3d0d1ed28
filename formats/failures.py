"""``failed.tsv``: the videos a batch stage could not process (extract, classify).

A tab-separated file with the header ``video_id  path  reason`` and one row per failed video
(the reason kept to one line). It lists the failures of the latest run only; its absence
means nothing failed. Written whole and atomically by ``write_failures`` (a stage rewrites
it as failures happen, so a killed run still leaves the list of what had failed so far),
read by ``read_failures``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from runstate import atomic

FAILED_COLUMNS = ("video_id", "path", "reason")


class FailedVideo(NamedTuple):
    """One failed video: its id, the file (or ``archive:member``, or the feature store) and why."""

    video_id: str
    path: str
    reason: str


def write_failures(path: str | Path, failures: Iterable[FailedVideo]) -> None:
    """Write the list (atomically); an empty list removes the file."""
    path = Path(path)
    failures = list(failures)
    if not failures:
        path.unlink(missing_ok=True)
        return
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(FAILED_COLUMNS)
    for failure in failures:
        writer.writerow([failure.video_id, failure.path, " ".join(str(failure.reason).split())])
    atomic.write_text(path, text.getvalue())


def read_failures(path: str | Path) -> list[FailedVideo]:
    """The rows of a failure list (``[]`` when the file does not exist); ``ValueError`` naming a bad line."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or tuple(rows[0]) != FAILED_COLUMNS:
        raise ValueError(f"{path}: expected the header {'/'.join(FAILED_COLUMNS)} (tab-separated)")
    for line_number, row in enumerate(rows[1:], start=2):
        if len(row) != len(FAILED_COLUMNS):
            raise ValueError(f"{path}: line {line_number} has {len(row)} tab-separated fields, "
                             f"expected {len(FAILED_COLUMNS)}")
    return [FailedVideo(*row) for row in rows[1:]]


class FailureList:
    """The failures of a running stage, kept on disk as they happen (``failed.tsv`` of this run).

    Args:
        path: the file; a list left by an earlier run is removed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self.failures: list[FailedVideo] = []

    def add(self, video_id: str, path: str, reason: str) -> None:
        self.failures.append(FailedVideo(video_id, str(path), " ".join(str(reason).split())))
        write_failures(self.path, self.failures)

    def __len__(self) -> int:
        return len(self.failures)
