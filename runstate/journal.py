"""Per-video resume of a batch stage (classify, detect): an append-only journal.

``Journal`` (e.g. ``detections/partial.jsonl``): one JSON line per finished video,
``{"video_id": ..., "entries": [...]}``, written and flushed as each video finishes, after a
first line ``{"fingerprint": ...}`` naming the inputs and settings the entries were made with.
A rerun with the same fingerprint skips the videos already in it; a different fingerprint
(new proposals, checkpoint, features or settings) starts it afresh. A line cut short by a
kill (the last one, without its newline) is dropped and redone.

The journal is the one file written by appending rather than by ``runstate.atomic``'s
replace: a record is one ``write`` of a whole line, so a kill leaves at most a cut last
line, which the next open drops. Its first line is written atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from runstate import atomic

log = logging.getLogger(__name__)

class Journal:
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
            log.info("%s was made with other inputs or settings; starting afresh", self.path)
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
            log.info("dropping an unfinished last line of %s", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(good_length)
        return True

    def _start_afresh(self) -> None:
        atomic.write_text(self.path, json.dumps({"fingerprint": self.fingerprint}) + "\n")
        self.entries = {}

    def __contains__(self, video_id: str) -> bool:
        return video_id in self.entries

    def add(self, video_id: str, entries: list[dict]) -> None:
        """Record one finished video (one line, flushed at once)."""
        try:
            self._handle.write(json.dumps({"video_id": video_id, "entries": entries}) + "\n")
            self._handle.flush()
        except OSError as error:
            raise atomic.OutputError(self.path, error) from None
        self.entries[video_id] = entries

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()
