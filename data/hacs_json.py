"""HACS / ActivityNet ground-truth JSON read into numpy columns, without pandas: the command-line
evaluator scores from these columns, and :func:`data.annotations.load_hacs_json` makes its tables
of them.

The file is ``{"database": {video_id: {"subset": ..., "duration": seconds, "annotations":
[{"label": class name, "segment": [start, end]}, ...]}}}``: each video needs ``subset`` and
``duration`` (a number or a numeric string); ``annotations`` may be absent (test videos).

It is read as the submission files are (``formats.submission``), in one of two ways:

* **typed**: msgspec decodes the JSON straight into small records, checking every field's type as
  it parses; numpy then checks the values (subsets, durations > 0, class names, segments);
* **validating**: the JSON into Python dicts, checked entry by entry. When the typed way does not
  fit (a numeric string, a wrong type, a bad value, NaN, malformed JSON), the file is read again
  this way, which accepts what it can and names the first bad entry in an
  :class:`~data.errors.AnnotationError`; both ways give the same columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from pathlib import Path

import msgspec
import numpy as np

from data.errors import AnnotationError

SUBSETS = ("training", "validation", "testing")


@dataclass
class HacsGroundTruth:
    """A HACS-style ground-truth file as columns: ``V`` videos and ``G`` segments, in file order.

    Attributes:
        video_ids: ``(V,)`` object, the video ids (str).
        durations: ``(V,)`` float64 seconds.
        video_subsets: ``(V,)`` object, each video's subset (one of :data:`SUBSETS`).
        segment_video: ``(G,)`` int64 index into ``video_ids`` of each segment's video.
        segments: ``(G, 2)`` float64 ``[start, end]`` in seconds.
        labels: ``(G,)`` int64 index into ``class_names``.
        class_names: the given class list, else the sorted set of the file's labels.
    """

    video_ids: np.ndarray
    durations: np.ndarray
    video_subsets: np.ndarray
    segment_video: np.ndarray
    segments: np.ndarray
    labels: np.ndarray
    class_names: list[str]

    def segment_subsets(self) -> np.ndarray:
        """``(G,)`` object: the subset of each segment (its video's)."""
        return self.video_subsets[self.segment_video]

    def video_durations(self) -> dict[str, float]:
        """Video id -> duration in seconds."""
        return dict(zip(self.video_ids.tolist(), self.durations.tolist()))


def read_hacs_json(path: str | Path, class_names: list[str] | None = None) -> HacsGroundTruth:
    """Read and check a HACS or ActivityNet style JSON file (the typed way, else the validating way).

    Args:
        path: the JSON file.
        class_names: the class list; a label outside it is an error. By default the sorted set of
            the file's labels.

    Raises:
        AnnotationError: naming the file, the entry and the field.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AnnotationError(path, "-", "-", "file not found") from None
    columns = _typed_columns(raw)
    if columns is None:
        columns = _validated_columns(_parse(raw, path), path)
    video_ids, durations, video_subsets, segment_video, segments, labels = columns
    codes, class_names = _label_codes(labels, class_names, path)
    return HacsGroundTruth(video_ids, durations, video_subsets, segment_video, segments, codes, class_names)


def _label_codes(labels: list[str], class_names: list[str] | None, path: Path) -> tuple[np.ndarray, list[str]]:
    """``(G,)`` int64 index of each label into the class names, and the class names; each distinct
    label is looked up once (a repeated name in ``class_names``: its last index)."""
    distinct = list(dict.fromkeys(labels))
    if class_names is None:
        class_names = sorted(distinct)
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted(name for name in distinct if name not in index)
    if unknown:
        raise AnnotationError(path, "annotations", "label", f"{unknown[:5]} not in the given class list")
    code_of = {name: index[name] for name in distinct}
    return np.fromiter(map(code_of.__getitem__, labels), np.int64, count=len(labels)), list(class_names)


# ---------------------------------------------------------------------------------------------
# The typed way


class _Segment(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """``[start, end]``: a JSON array of exactly two numbers."""

    start: float
    end: float


class _Annotation(msgspec.Struct, gc=False):
    label: str
    segment: _Segment


class _Video(msgspec.Struct):
    subset: str
    duration: float
    annotations: list[_Annotation] = []


class _File(msgspec.Struct):
    database: dict[str, _Video]


_DECODER = msgspec.json.Decoder(_File)


def _typed_columns(raw: bytes) -> tuple | None:
    """The columns of :func:`_validated_columns` from the typed records, or None when the file does
    not fit them or a value is out of bounds (the validating way then says which)."""
    try:
        database = _DECODER.decode(raw).database
    except msgspec.DecodeError:  # also msgspec.ValidationError, its subclass
        return None
    videos = list(database.values())
    sizes = np.fromiter((len(video.annotations) for video in videos), np.int64, count=len(videos))
    annotations = list(chain.from_iterable(video.annotations for video in videos))
    start, end = (np.fromiter(map(attrgetter(name), annotations), np.float64, count=len(annotations))
                  for name in ("segment.start", "segment.end"))
    durations = np.fromiter(map(attrgetter("duration"), videos), np.float64, count=len(videos))
    subsets = [video.subset for video in videos]
    labels = list(map(attrgetter("label"), annotations))
    if (not set(subsets) <= set(SUBSETS) or not np.all(durations > 0) or not all(dict.fromkeys(labels))
            or not np.all(start >= 0) or not np.all(end >= start)):
        return None
    video_ids = np.array(list(database), dtype=object)
    segment_video = np.repeat(np.arange(len(videos), dtype=np.int64), sizes)
    return (video_ids, durations, np.array(subsets, dtype=object), segment_video, np.stack([start, end], axis=1),
            labels)


# ---------------------------------------------------------------------------------------------
# The validating way


def _parse(raw: bytes, path: Path) -> dict:
    """The JSON as Python objects: msgspec, else Python's json for what strict JSON rejects (NaN,
    a BOM), which names the line of malformed text."""
    try:
        data = msgspec.json.decode(raw)  # strict JSON, several times faster
    except msgspec.DecodeError:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise AnnotationError(path, f"line {error.lineno}", "-", f"not valid JSON ({error.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise AnnotationError(path, "top level", "database", "missing or not a mapping of videos")
    return data


def _validated_columns(data: dict, path: Path) -> tuple:
    """``(video_ids (V,), durations (V,), video_subsets (V,), segment_video (G,), segments (G, 2),
    labels)``, checking entry by entry; raises AnnotationError at the first bad one."""
    video_ids, durations, subsets, segment_video, segments, labels = [], [], [], [], [], []
    for video_id, entry in data["database"].items():
        where = f"database[{video_id!r}]"
        if not isinstance(entry, dict):
            raise AnnotationError(path, where, "-", "not a mapping")
        subset = entry.get("subset")
        if subset not in SUBSETS:
            raise AnnotationError(path, where, "subset", f"must be one of {list(SUBSETS)}, got {subset!r}")
        duration = _number(entry.get("duration"), path, where, "duration")
        if duration <= 0:
            raise AnnotationError(path, where, "duration", f"must be > 0, got {duration}")
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list):
            raise AnnotationError(path, where, "annotations", "must be a list")
        for i, annotation in enumerate(annotations):
            segments.append(_checked_annotation(annotation, path, f"{where}.annotations[{i}]", labels))
            segment_video.append(len(video_ids))
        video_ids.append(str(video_id))
        durations.append(duration)
        subsets.append(subset)
    return (np.array(video_ids, dtype=object), np.array(durations, dtype=np.float64),
            np.array(subsets, dtype=object), np.array(segment_video, dtype=np.int64),
            np.array(segments, dtype=np.float64).reshape(-1, 2), labels)


def _checked_annotation(annotation, path: Path, where: str, labels: list[str]) -> tuple[float, float]:
    """``(start, end)`` of one annotation, its label appended to ``labels``; else AnnotationError."""
    if not isinstance(annotation, dict):
        raise AnnotationError(path, where, "-", "not a mapping")
    label = annotation.get("label")
    if not isinstance(label, str) or not label:
        raise AnnotationError(path, where, "label", f"must be a class name, got {label!r}")
    segment = annotation.get("segment")
    if not isinstance(segment, (list, tuple)) or len(segment) != 2:
        raise AnnotationError(path, where, "segment", f"must be [start, end], got {segment!r}")
    start = _number(segment[0], path, where, "segment[0]")
    end = _number(segment[1], path, where, "segment[1]")
    if start < 0:
        raise AnnotationError(path, where, "segment[0]", f"must be >= 0 seconds, got {start}")
    if end < start:
        raise AnnotationError(path, where, "segment", f"end {end} is before start {start}")
    labels.append(label)
    return start, end


def _number(value, path, where: str, field_name: str) -> float:
    """A finite float from a number or a numeric string, else AnnotationError."""
    if isinstance(value, bool):
        raise AnnotationError(path, where, field_name, f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(path, where, field_name, f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise AnnotationError(path, where, field_name, f"must be finite, got {value!r}")
    return number
