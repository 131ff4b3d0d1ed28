"""Resuming the classify stage, and reporting the videos that failed.

``DetectionJournal`` (``detections/partial.jsonl``): one JSON line per finished video,
``{"video_id": ..., "entries": [submission entries]}``, written and flushed as each video
finishes, after a first line ``{"fingerprint": ...}`` naming the inputs and settings the
entries were made with. A rerun with the same fingerprint skips the videos already in it; a
different fingerprint (new proposals, checkpoint, features or settings) starts it afresh. A
line cut short by a kill (the last one, without its newline) is dropped and redone.

``FailureList`` (``detections/failed.tsv``): a tab-separated file with the header
``video_id, path, reason`` (the layout of the extract stage's ``failed.tsv``), one line per
failed video, appended and flushed as failures happen. It is removed when a run starts,
so it lists the failures of the latest run only; its absence means nothing failed.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FAILED_COLUMNS = ("video_id", "path", "reason")


class DetectionJournal:
    """Append-only record of the videos already classified (see the module docstring).

    Args:
        path: the journal file.
        fingerprint: identity of the inputs and settings of this run.

    Attributes:
        entries: video id -> its submission entries, for every video in the journal.
    """

    def __init__(self, path: str | Path, fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.entries: dict[str, list[dict]] = {}
        if not self._resume():
            self._start_afresh()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _resume(self) -> bool:
        """Load a journal made with the same fingerprint; False when there is none to resume."""
        if not self.path.is_file():
            return False
        with open(self.path, "rb") as handle:
            data = handle.read()
        lines = data.split(b"\n")
        try:
            header = json.loads(lines[0])
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict) or header.get("fingerprint") != self.fingerprint:
            log.info("classify: %s was made with other inputs or settings; starting afresh", self.path)
            return False
        good_length = len(lines[0]) + 1
        # The text after the last newline is either empty or a line cut short by a kill.
        for number, line in enumerate(lines[1:-1], start=2):
            try:
                record = json.loads(line)
                video_id, entries = record["video_id"], record["entries"]
            except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as error:
                raise ValueError(f"{self.path}: line {number} is not a journal record ({error}); "
                                 "delete the file to redo every video") from None
            self.entries[video_id] = entries
            good_length += len(line) + 1
        if good_length < len(data):
            log.info("classify: dropping an unfinished last line of %s", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(good_length)
        return True

    def _start_afresh(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)
        self.entries = {}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.entries

    def add(self, video_id: str, entries: list[dict]) -> None:
        """Record one finished video (one line, flushed at once)."""
        self._handle.write(json.dumps({"video_id": video_id, "entries": entries}) + "\n")
        self._handle.flush()
        self.entries[video_id] = entries

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> DetectionJournal:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()


class FailureList:
    """``failed.tsv`` of the current run (see the module docstring).

    Args:
        path: the file; an existing one (from an earlier run) is removed.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self.failures: list[tuple[str, str, str]] = []

    def add(self, video_id: str, path: str, reason: str) -> None:
        """Append one failed video; the reason is kept to one line."""
        row = (video_id, str(path), " ".join(str(reason).split()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            if new_file:
                writer.writerow(FAILED_COLUMNS)
            writer.writerow(row)
        self.failures.append(row)

    def __len__(self) -> int:
        return len(self.failures)


def read_failures(path: str | Path) -> list[tuple[str, str, str]]:
    """The rows of a ``failed.tsv`` (``[]`` when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    if not rows or tuple(rows[0]) != FAILED_COLUMNS:
        raise ValueError(f"{path}: expected the header {'/'.join(FAILED_COLUMNS)} (tab-separated)")
    return [tuple(row) for row in rows[1:]]
