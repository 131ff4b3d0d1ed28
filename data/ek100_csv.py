"""EPIC-Kitchens-100 segment files (CSV, or a pickle with the same columns) read into numpy
columns and checked, without pandas for a CSV: the command-line evaluator scores from these
columns, and :func:`data.annotations.load_ek100_csv` makes its tables of them.

A segment file has one row per action: ``video_id``, ``start_timestamp`` and
``stop_timestamp`` (``HH:MM:SS.ff``), ``verb_class`` and ``noun_class`` (integer ids), and
usually ``narration_id``, which names the row in error messages. A *labelless* file, with
neither class column (the leaderboard's ``EPIC_100_test_timestamps.csv``), lists the videos of a
split used only for detection. A class file (``EPIC_100_verb_classes.csv``) has ``id`` and
``key`` columns, the ids ``0..K-1``.

A malformed file raises :class:`~data.errors.AnnotationError` naming the file, the row (``row 3
(P01_01_0)``: one-based, after the header line) and the column. A CSV is read with the ``csv``
module; a pickle (``.pkl``, ``.pickle``) is pandas' format, so reading one imports pandas, and
its columns are checked by the same code.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.errors import AnnotationError
from data.hacs_json import SUBSETS

REQUIRED_COLUMNS = ("video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class")
_LABEL_COLUMNS = ("verb_class", "noun_class")
_TIMESTAMP = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


@dataclass
class Ek100GroundTruth:
    """An EK100 segment file as columns: ``S`` segments (rows) in file order, ``V`` videos.

    Attributes:
        video_ids: ``(V,)`` object, the video ids (str) in order of first appearance.
        segment_video: ``(S,)`` int64 index into ``video_ids`` of each segment's video.
        segments: ``(S, 2)`` float64 ``[start, end]`` in seconds.
        verbs, nouns: ``(S,)`` int64 class ids (empty for a labelless file).
        classes: ``{"verb": names, "noun": names}``: from the class files, else numbered
            ``verb_0..`` up to the largest id seen.
        subset: the subset every row belongs to.
        labelled: False for a labelless file (its rows only list videos and times).
    """

    video_ids: np.ndarray
    segment_video: np.ndarray
    segments: np.ndarray
    verbs: np.ndarray
    nouns: np.ndarray
    classes: dict[str, list[str]]
    subset: str
    labelled: bool = True

    @property
    def labels(self) -> np.ndarray:
        """``(S,)`` int64 action ids ``verb * num_nouns + noun``."""
        return self.verbs * len(self.classes["noun"]) + self.nouns

    def last_ends(self) -> np.ndarray:
        """``(V,)`` float64: the latest stop time of each video's rows (seconds)."""
        ends = np.full(len(self.video_ids), -np.inf)
        np.maximum.at(ends, self.segment_video, self.segments[:, 1])
        return ends

    def video_durations(self) -> dict[str, float]:
        """Video id -> duration in seconds (the last stop time: a segment file knows no more)."""
        return dict(zip(self.video_ids.tolist(), self.last_ends().tolist()))


def parse_timestamp(text: str) -> float:
    """``"HH:MM:SS.ff"`` -> seconds. Raises ValueError on anything else."""
    match = _TIMESTAMP.match(str(text).strip())
    if not match:
        raise ValueError(f"not an HH:MM:SS.ff timestamp: {text!r}")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def read_ek100_csv(
    path: str | Path,
    verb_classes_csv: str | Path | None = None,
    noun_classes_csv: str | Path | None = None,
    subset: str = "validation",
) -> Ek100GroundTruth:
    """Read and check an EK100 segment file (module docstring); every row gets ``subset``."""
    path = Path(path)
    if subset not in SUBSETS:
        raise AnnotationError(path, "-", "subset", f"must be one of {list(SUBSETS)}, got {subset!r}")
    columns, num_rows = read_table(path)
    labelless = not any(column in columns for column in _LABEL_COLUMNS)
    for column in REQUIRED_COLUMNS:
        if column not in columns and not (labelless and column in _LABEL_COLUMNS):
            raise AnnotationError(path, "header", column, "missing column")
    entry_names = columns.get("narration_id", range(num_rows))

    def where(row: int) -> str:
        return f"row {row + 2} ({entry_names[row]})"  # +2: one-based, after the header line

    segments = np.empty((num_rows, 2), dtype=np.float64)
    for row, (start_text, stop_text) in enumerate(zip(columns["start_timestamp"], columns["stop_timestamp"])):
        for side, (column, text) in enumerate((("start_timestamp", start_text), ("stop_timestamp", stop_text))):
            try:
                segments[row, side] = parse_timestamp(text)
            except ValueError as error:
                raise AnnotationError(path, where(row), column, str(error)) from None
        if segments[row, 1] < segments[row, 0]:
            raise AnnotationError(path, where(row), "stop_timestamp", f"end {stop_text} is before start {start_text}")

    video_ids, segment_video = _first_appearance([str(video) for video in columns["video_id"]])
    if labelless:
        verbs = nouns = np.zeros(0, dtype=np.int64)
    else:
        verbs, nouns = (_class_ids(columns[column], column, path, where) for column in _LABEL_COLUMNS)
    classes = {}
    for head, column, ids, class_csv in (("verb", "verb_class", verbs, verb_classes_csv),
                                         ("noun", "noun_class", nouns, noun_classes_csv)):
        classes[head] = read_class_names(class_csv) if class_csv else \
            [f"{head}_{i}" for i in range(int(ids.max()) + 1 if ids.size else 0)]
        bad = np.flatnonzero((ids < 0) | (ids >= len(classes[head])))
        if bad.size:
            row = int(bad[0])
            raise AnnotationError(path, where(row), column, f"class {ids[row]} outside 0..{len(classes[head]) - 1}")
    return Ek100GroundTruth(video_ids, segment_video, segments, verbs, nouns, classes, subset,
                            labelled=not labelless)


def read_class_names(path: str | Path) -> list[str]:
    """EK100 class file (``id,key,...``) -> the keys ordered by id; the ids must be ``0..K-1``."""
    path = Path(path)
    columns, num_rows = read_table(path)
    for column in ("id", "key"):
        if column not in columns:
            raise AnnotationError(path, "header", column, "missing column")
    ids = [_integer(value) for value in columns["id"]]
    if None in ids or sorted(ids) != list(range(num_rows)):
        raise AnnotationError(path, "all rows", "id", "ids must be the integers 0..K-1")
    return [str(key) for _, key in sorted(zip(ids, columns["key"]))]


def read_table(path: Path) -> tuple[dict[str, Sequence], int]:
    """``(column name -> its values in row order, number of rows)`` of a CSV (values are str) or a
    pickled table (values as stored; an index named like ``narration_id`` becomes a column)."""
    if not path.is_file():
        raise AnnotationError(path, "-", "-", "file not found")
    if path.suffix in (".pkl", ".pickle"):
        return _read_pickle(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise AnnotationError(path, "-", "-", f"cannot be read as a table ({error})") from None
    if not rows or not rows[0]:
        raise AnnotationError(path, "-", "-", "cannot be read as a table (no header line)")
    header, body = rows[0], [row for row in rows[1:] if row]  # blank lines are skipped, as readers do
    for row, values in enumerate(body):
        if len(values) != len(header):
            raise AnnotationError(path, f"row {row + 2}", "-",
                                  f"{len(values)} fields where the header has {len(header)}")
    return {name: [values[i] for values in body] for i, name in enumerate(header)}, len(body)


def _read_pickle(path: Path) -> tuple[dict[str, Sequence], int]:
    import pandas as pd  # a pickled table is pandas' format

    try:
        table = pd.read_pickle(path)
    except Exception as error:  # unpickling raises what the stream's objects raise
        raise AnnotationError(path, "-", "-", f"cannot be read as a pickled table ({error})") from None
    if not isinstance(table, pd.DataFrame):
        raise AnnotationError(path, "-", "-", f"holds a {type(table).__name__}, not a table")
    if table.index.name is not None:  # the EK100 pickles index rows by narration_id
        table = table.reset_index()
    return {str(name): table[name].tolist() for name in table.columns}, len(table)


def _first_appearance(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(distinct (V,) object in order of first appearance, (N,) int64 index of each value into it)``."""
    code_of: dict[str, int] = {}
    codes = np.fromiter((code_of.setdefault(value, len(code_of)) for value in values), np.int64, count=len(values))
    return np.array(list(code_of), dtype=object), codes


def _integer(value) -> int | None:
    """``value`` (a str of a CSV cell, or a stored number) as an int; None if it is not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _class_ids(values: Sequence, column: str, path: Path, where) -> np.ndarray:
    """``(S,)`` int64 class ids of a label column; AnnotationError at the first cell that is not an integer."""
    ids = [_integer(value) for value in values]
    if None in ids:
        row = ids.index(None)
        raise AnnotationError(path, where(row), column, f"must be an integer class, got {values[row]!r}")
    return np.array(ids, dtype=np.int64)
