"""Submission files (HACS/ActivityNet detection, EK100 action detection): building, validating, writing
and reading them into prediction tables. ``formats.proposals`` reads proposal files with the same parser.

Formats (DESIGN.md "File formats"), times in seconds:

* HACS / ActivityNet: ``{"version": str, "results": {video_id: [{"label": class name, "score": x,
  "segment": [start, end]}, ...]}}`` (``external_data`` may be present; it is not required).
* EK100: ``{"version": "0.2", "challenge": "action_detection", "sls_pt": int, "sls_tl": int,
  "sls_td": int, "results": {video_id: [{"verb": int, "noun": int, "action": "v,n", "score": x,
  "segment": [start, end]}, ...]}}``. Checked as the EK100 server checks it: the version, the
  challenge, supervision levels 0..5, verb and noun class ids in range, ``action`` a ``"v,n"`` string
  of in-range ids (the server scores the action task from this string alone, so it may differ from
  ``verb``/``noun``), a score and a two-number segment. Beyond the server, numbers must be finite
  and of number type (the server only rejects NaN).
* Proposals: ``{"results": {video_id: [{"segment": [start, end], "score": x}, ...]}}``.

The first bad entry raises :class:`SubmissionError` naming the file, the video, the entry's index
and the field.

A file is read in one of two ways (a leaderboard file holds hundreds of thousands of entries):

* **Typed** (``load_*``): msgspec decodes the JSON straight into small typed records, checking
  every field's type while it parses (in C); numpy then checks the values (ranges, the ``"v,n"``
  action strings). It accepts only files that the validating way accepts, and gives the same table.
* **Validating** (``read_json`` + ``*_predictions``, also the way for in-memory dicts): the JSON
  into Python dicts, then the checks below. When the typed way rejects a file (a wrong type, a
  missing field, a NaN, any malformed JSON) the file is read again this way, which names the first
  bad entry, so every message comes from one place.

Both ways build the entries' columns (:class:`PredictionColumns`: numpy arrays, class names encoded
once per distinct name); the ``load_*_columns`` functions return them (the command line scores them
as they are, without pandas), the ``load_*_submission`` and ``*_predictions`` ones their table.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import numbers
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from runstate import atomic
from runstate.parts import contiguous_shares, default_parts, run_in_parts

if TYPE_CHECKING:
    import pandas as pd

EK100_VERSION = "0.2"
EK100_CHALLENGE = "action_detection"
SUPERVISION_LEVEL_KEYS = ("sls_pt", "sls_tl", "sls_td")
EK100_NUM_VERBS = 97
EK100_NUM_NOUNS = 300


class SubmissionError(ValueError):
    """A submission or proposal file is malformed; the message names the file, entry and field."""


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while a large file is decoded: the hundreds of
    thousands of containers a parser creates would otherwise trigger full collections that cost
    more than the parsing (and can find nothing to free: parsed JSON has no cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_json(path: str | Path) -> dict:
    """Parse a JSON file whose top level must be an object.

    msgspec parses strict JSON; what it rejects (malformed text, but also ``NaN``/``Infinity`` and
    numbers beyond float range, which Python's json module reads) is parsed again by the json
    module, so that the accepted files, the values and the error messages stay Python's.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SubmissionError(f"{path}: file not found") from None
    try:
        with _gc_paused():
            data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        try:
            with _gc_paused():
                data = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise SubmissionError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise SubmissionError(f"{path}: the top level must be a JSON object, got {type(data).__name__}")
    return data


def _is_number(value) -> bool:
    """A finite real of any number type (JSON ints and floats, numpy scalars), not a bool."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _results(submission: dict, source: str) -> dict:
    results = submission.get("results")
    if not isinstance(results, dict):
        raise SubmissionError(f"{source}: 'results' is missing or not a mapping of video id -> "
                              "list of entries")
    for video_id, entries in results.items():
        if not isinstance(entries, list):
            raise SubmissionError(f"{source}: results['{video_id}'] must be a list of entries")
    return results


def _check_ek100_header(submission: dict, source: str) -> None:
    """The EK100 server's checks of ``version``, ``challenge`` and the supervision levels."""
    if "version" not in submission:
        raise SubmissionError(f"{source}: missing 'version' (expected \"{EK100_VERSION}\")")
    if submission["version"] != EK100_VERSION:
        raise SubmissionError(f"{source}: 'version' is {submission['version']!r}, the EK100 server accepts "
                              f"\"{EK100_VERSION}\"")
    if submission.get("challenge") != EK100_CHALLENGE:
        raise SubmissionError(f"{source}: 'challenge' is {submission.get('challenge')!r}, expected "
                              f"\"{EK100_CHALLENGE}\"")
    for key in SUPERVISION_LEVEL_KEYS:
        if key not in submission:
            raise SubmissionError(f"{source}: missing '{key}' (supervision level, an integer 0..5)")
        if not (_is_int(submission[key]) and 0 <= submission[key] <= 5):
            raise SubmissionError(f"{source}: '{key}' must be an integer 0..5, got {submission[key]!r}")


# ---------------------------------------------------------------------------------------------
# Columns, built by both ways of reading: the entries' fields gathered over all entries (in file
# order) into numpy arrays, checked there; None when some value is not acceptable.


@dataclass
class PredictionColumns:
    """A prediction file's entries as numpy columns, what both ways of reading build: the loaders'
    tables are made from it (:meth:`table`) and the command line scores it as it is, so that it
    never imports pandas. ``N`` entries in file order, ``V`` videos.

    Attributes:
        video_ids: ``(V,)`` object, the video ids (str) in file order.
        video_sizes: ``(V,)`` int64, each video's entry count (its entries follow the previous video's).
        segments: ``(N, 2)`` float64 ``[start, end]`` in seconds.
        score: ``(N,)`` float64.
        label_code: HACS: ``(N,)`` int64 index into ``label_names``; otherwise None.
        label_names: HACS: the distinct class names, in order of first appearance.
        class_ids: EK100: ``verb``, ``noun``, ``action_verb``, ``action_noun`` -> ``(N,)`` int64.
    """

    video_ids: np.ndarray
    video_sizes: np.ndarray
    segments: np.ndarray
    score: np.ndarray
    label_code: np.ndarray | None = None
    label_names: list[str] = field(default_factory=list)
    class_ids: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.score)

    @staticmethod
    def concatenate(parts: Sequence[PredictionColumns]) -> PredictionColumns:
        """The columns of consecutive parts of one file, joined in order, as if read at once: class
        names keep their order of first appearance over the whole file (each part's codes are
        renumbered into the joined names)."""
        if len(parts) == 1:
            return parts[0]
        joined = PredictionColumns(
            np.concatenate([part.video_ids for part in parts]),
            np.concatenate([part.video_sizes for part in parts]),
            np.concatenate([part.segments for part in parts]).reshape(-1, 2),
            np.concatenate([part.score for part in parts]),
            class_ids={key: np.concatenate([part.class_ids[key] for part in parts]) for key in parts[0].class_ids},
        )
        if parts[0].label_code is not None:
            index: dict[str, int] = {}
            codes = []
            for part in parts:
                renumbered = np.array([index.setdefault(name, len(index)) for name in part.label_names], np.int64)
                codes.append(renumbered[part.label_code])
            joined.label_code, joined.label_names = np.concatenate(codes), list(index)
        return joined

    def video_codes(self, video_ids: Sequence[str]) -> np.ndarray:
        """``(N,)`` int64 index of each entry's video in ``video_ids`` (e.g. the ground truth's
        videos, by code), ``len(video_ids)`` for a video not among them; each of this file's videos
        is looked up once."""
        index = {str(video_id): code for code, video_id in enumerate(video_ids)}
        codes = [index.get(video_id, len(video_ids)) for video_id in self.video_ids.tolist()]
        return np.repeat(np.array(codes, dtype=np.int64), self.video_sizes)

    def video_id_column(self) -> np.ndarray:
        """``(N,)`` object: the video id of each entry."""
        return np.repeat(self.video_ids, self.video_sizes)

    def label_name_column(self) -> np.ndarray:
        """``(N,)`` object: the class name of each entry (HACS)."""
        return np.array(self.label_names, dtype=object)[self.label_code]

    def table(self) -> pd.DataFrame:
        """The loaders' table: ``video_id, start, end, score`` and then ``label_name`` (HACS) or
        ``verb, noun, action_verb, action_noun`` (EK100)."""
        import pandas as pd  # here: the command line scores the columns and never needs pandas

        columns = {"video_id": self.video_id_column(), "start": self.segments[:, 0], "end": self.segments[:, 1],
                   "score": self.score}
        if self.label_code is not None:
            columns["label_name"] = self.label_name_column()
        return pd.DataFrame({**columns, **self.class_ids})


def _base_columns(results: dict, segments: np.ndarray, score: np.ndarray) -> PredictionColumns:
    """The columns every format has; ``segments`` ``(N, 2)`` and ``score`` ``(N,)`` are in the order
    of ``results`` (video id -> list of entries)."""
    video_ids = np.array([str(video_id) for video_id in results], dtype=object)
    video_sizes = np.fromiter(map(len, results.values()), dtype=np.int64, count=len(results))
    return PredictionColumns(video_ids, video_sizes, segments, score)


def _encode(values: Iterable, count: int) -> tuple[np.ndarray, list]:
    """``(codes, distinct)``: ``(count,)`` int64 index of each value into the distinct values, which
    are in order of first appearance (as ``pd.factorize``). One dict lookup a value: a submission
    repeats a few hundred class names (or a few thousand action strings) over all its entries."""
    index: defaultdict = defaultdict(itertools.count().__next__)  # a new value gets the next code
    codes = np.fromiter(map(index.__getitem__, values), dtype=np.int64, count=count)
    return codes, list(index)


def _class_id_column(values: Iterable, count: int, num_classes: int) -> np.ndarray | None:
    """``(count,)`` int64 class ids when every value is an int in ``[0, num_classes)``."""
    try:
        ids = np.fromiter(values, dtype=np.int64, count=count)
    except OverflowError:  # beyond int64, so out of range anyway
        return None
    return ids if np.all((ids >= 0) & (ids < num_classes)) else None


def _action_columns(actions: Iterable, count: int, num_verbs: int,
                    num_nouns: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(verb, noun)``, two ``(count,)`` int64 columns, from ``"v,n"`` strings of in-range ids;
    each distinct string is parsed once."""
    codes, distinct = _encode(actions, count)
    pairs = [_parse_action(action, num_verbs, num_nouns) for action in distinct]
    if any(pair is None for pair in pairs):
        return None
    # (U, 2) ids of the distinct strings -> (N, 2) by each entry's string
    ids = np.array(pairs, dtype=np.int64).reshape(-1, 2)[codes]
    return ids[:, 0], ids[:, 1]


def _parse_action(action, num_verbs: int, num_nouns: int) -> tuple[int, int] | None:
    """``"v,n"`` -> (v, n) when both are in-range integers, else None."""
    if not isinstance(action, str):
        return None
    parts = action.split(",")
    if len(parts) != 2:
        return None
    try:
        verb, noun = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if not (0 <= verb < num_verbs and 0 <= noun < num_nouns):
        return None
    return verb, noun


# ---------------------------------------------------------------------------------------------
# The validating way: parsed dicts. A bulk pass gathers each field over all entries and checks
# types with set() and values with numpy; only when it finds a problem does the entry-by-entry
# pass run, to name the first bad entry.


def _check_segment_and_score(entry, where: str) -> None:
    if not isinstance(entry, dict):
        raise SubmissionError(f"{where}: must be an object, got {type(entry).__name__}")
    score = entry.get("score")
    if not _is_number(score):
        raise SubmissionError(f"{where}, field 'score': must be a finite number, got {score!r}")
    segment = entry.get("segment")
    if not (isinstance(segment, (list, tuple)) and len(segment) == 2
            and _is_number(segment[0]) and _is_number(segment[1])):
        raise SubmissionError(f"{where}, field 'segment': must be [start, end], two finite numbers, "
                              f"got {segment!r}")


def _check_hacs_entry(entry, where: str) -> None:
    _check_segment_and_score(entry, where)
    label = entry.get("label")
    if not isinstance(label, str) or not label:
        raise SubmissionError(f"{where}, field 'label': must be a class name, got {label!r}")


def _ek100_entry_checker(num_verbs: int, num_nouns: int):
    def check(entry, where: str) -> None:
        _check_segment_and_score(entry, where)
        for key, count in (("verb", num_verbs), ("noun", num_nouns)):
            value = entry.get(key)
            if not (_is_int(value) and 0 <= value < count):
                raise SubmissionError(f"{where}, field '{key}': must be an integer class id in "
                                      f"0..{count - 1}, got {value!r}")
        if _parse_action(entry.get("action"), num_verbs, num_nouns) is None:
            raise SubmissionError(f"{where}, field 'action': must be a \"verb,noun\" string of class ids "
                                  f"(verbs 0..{num_verbs - 1}, nouns 0..{num_nouns - 1}), "
                                  f"got {entry.get('action')!r}")

    return check


def _scan(results: dict, source: str, check_entry) -> dict:
    """Entry-by-entry check; raises SubmissionError at the first bad entry. When all pass (values of
    number subclasses, e.g. numpy floats, which the bulk pass does not take) returns the results
    with scores and segments as plain floats and class ids as plain ints."""
    plain = {}
    for video_id, entries in results.items():
        plain[video_id] = []
        for index, entry in enumerate(entries):
            check_entry(entry, f"{source}: results['{video_id}'][{index}]")
            converted = dict(entry, score=float(entry["score"]), segment=[float(v) for v in entry["segment"]])
            for key, kind in (("verb", int), ("noun", int), ("label", str), ("action", str)):
                if key in entry:
                    converted[key] = kind(entry[key])
            plain[video_id].append(converted)
    return plain


def _all_of_types(values: list, types: set) -> bool:
    return set(map(type, values)) <= types


def _finite_floats(values: list) -> np.ndarray | None:
    """float64 array of int/float values when all are finite, else None."""
    if not _all_of_types(values, {int, float}):
        return None
    try:
        array = np.array(values, dtype=np.float64)
    except OverflowError:
        return None
    return array if np.all(np.isfinite(array)) else None


def _bulk_base_columns(results: dict) -> tuple[list, PredictionColumns] | None:
    """(entries, columns) when every entry has a valid score and segment."""
    entries = list(chain.from_iterable(results.values()))
    if not _all_of_types(entries, {dict}):
        return None
    segments = [entry.get("segment") for entry in entries]
    if not _all_of_types(segments, {list}) or set(map(len, segments)) - {2}:
        return None
    start = _finite_floats([segment[0] for segment in segments])
    end = _finite_floats([segment[1] for segment in segments])
    score = _finite_floats([entry.get("score") for entry in entries])
    if start is None or end is None or score is None:
        return None
    return entries, _base_columns(results, np.stack([start, end], axis=1), score)


def _bulk_hacs_columns(results: dict) -> PredictionColumns | None:
    base = _bulk_base_columns(results)
    if base is None:
        return None
    entries, columns = base
    labels = [entry.get("label") for entry in entries]
    if not _all_of_types(labels, {str}):
        return None
    columns.label_code, columns.label_names = _encode(labels, len(labels))
    return columns if all(columns.label_names) else None  # no empty class name


def _bulk_ek100_columns(results: dict, num_verbs: int, num_nouns: int) -> PredictionColumns | None:
    base = _bulk_base_columns(results)
    if base is None:
        return None
    entries, columns = base
    for key, count in (("verb", num_verbs), ("noun", num_nouns)):
        values = [entry.get(key) for entry in entries]
        if not _all_of_types(values, {int}):
            return None
        columns.class_ids[key] = _class_id_column(values, len(values), count)
        if columns.class_ids[key] is None:
            return None
    actions = [entry.get("action") for entry in entries]
    if not _all_of_types(actions, {str}):
        return None
    action_ids = _action_columns(actions, len(actions), num_verbs, num_nouns)
    if action_ids is None:
        return None
    columns.class_ids["action_verb"], columns.class_ids["action_noun"] = action_ids
    return columns


def hacs_prediction_columns(submission: dict, source: str = "submission") -> PredictionColumns:
    """Validate a HACS/ActivityNet detection submission; its entries as columns (with ``label_code``)."""
    if not isinstance(submission.get("version"), str):
        raise SubmissionError(f"{source}: 'version' is missing or not a string")
    results = _results(submission, source)
    columns = _bulk_hacs_columns(results)
    if columns is None:
        columns = _bulk_hacs_columns(_scan(results, source, _check_hacs_entry))
    return columns


def hacs_predictions(submission: dict, source: str = "submission") -> pd.DataFrame:
    """Validate a HACS/ActivityNet detection submission and return its predictions.

    Returns:
        DataFrame ``video_id, start, end, score, label_name`` in file order.
    """
    return hacs_prediction_columns(submission, source).table()


def ek100_prediction_columns(
    submission: dict,
    num_verbs: int = EK100_NUM_VERBS,
    num_nouns: int = EK100_NUM_NOUNS,
    source: str = "submission",
) -> PredictionColumns:
    """Validate an EK100 action-detection submission; its entries as columns (with ``class_ids``)."""
    _check_ek100_header(submission, source)
    results = _results(submission, source)
    columns = _bulk_ek100_columns(results, num_verbs, num_nouns)
    if columns is None:
        plain = _scan(results, source, _ek100_entry_checker(num_verbs, num_nouns))
        columns = _bulk_ek100_columns(plain, num_verbs, num_nouns)
    return columns


def ek100_predictions(
    submission: dict,
    num_verbs: int = EK100_NUM_VERBS,
    num_nouns: int = EK100_NUM_NOUNS,
    source: str = "submission",
) -> pd.DataFrame:
    """Validate an EK100 action-detection submission and return its predictions.

    Args:
        submission: the parsed JSON.
        num_verbs, num_nouns: class counts; ids must lie in ``[0, count)``.
        source: the file name for messages.

    Returns:
        DataFrame ``video_id, start, end, score, verb, noun, action_verb, action_noun`` in file order.
    """
    return ek100_prediction_columns(submission, num_verbs, num_nouns, source).table()


# ---------------------------------------------------------------------------------------------
# The typed way: files decoded straight into these records. msgspec checks each field's type as
# it parses (a float field takes JSON ints and floats, never bools, strings or null, and rejects
# numbers beyond float range; an int field only JSON integers); unknown fields of an entry are
# ignored, as the validating way ignores them; a repeated key keeps its last value, as Python's
# json does. The records are not tracked by the garbage collector (gc=False: they hold no
# containers), so hundreds of thousands of them cost it nothing.


class _Segment(msgspec.Struct, array_like=True, forbid_unknown_fields=True, gc=False):
    """``[start, end]`` in seconds: a JSON array of exactly two numbers. (A struct rather than a
    ``tuple[float, float]``: tuples are tracked by the garbage collector, whose next pass would
    walk all of them.)"""

    start: float
    end: float


class _ProposalEntry(msgspec.Struct, gc=False):
    score: float
    segment: _Segment


class _HacsEntry(_ProposalEntry, gc=False):
    label: str


class _Ek100Entry(_ProposalEntry, gc=False):
    verb: int
    noun: int
    action: str


class _HacsFile(msgspec.Struct):
    """The file around the entries; each video's entries are decoded by :func:`read_typed`."""

    version: str
    results: dict[str, msgspec.Raw]


class _Ek100File(msgspec.Struct):
    version: Any  # the header's values are checked by _check_ek100_header, as in the validating way
    challenge: Any
    sls_pt: Any
    sls_tl: Any
    sls_td: Any
    results: dict[str, msgspec.Raw]


_DECODERS: dict[Any, msgspec.json.Decoder] = {}  # type -> its decoder, made once
BYTES_PER_PART = 8 << 20  # a file is read in one part per 8 MB (runstate.parts.default_parts)


def _decoder(kind) -> msgspec.json.Decoder:
    return _DECODERS.get(kind) or _DECODERS.setdefault(kind, msgspec.json.Decoder(kind))


def read_typed(path: str | Path, file_kind: type, entry_kind: type, build_columns, workers: int | None = None):
    """``(header, columns)`` of a file read the typed way, or None when it does not fit the records
    (the validating way then says why).

    ``file_kind`` is the file's record, its ``results`` left as raw JSON per video
    (``dict[str, msgspec.Raw]``); ``build_columns`` makes the :class:`PredictionColumns` of decoded
    ``{video_id: [entry_kind, ...]}``, or None when a value is out of bounds. ``header`` is the
    file's record without its results.

    A large file is read in parts, one per worker process (``workers``; by default one per
    :data:`BYTES_PER_PART` and usable CPU, see ``runstate.parts``): each process parses the file's
    outline (msgspec skims the entries without building them), decodes and checks the videos of
    its share of the bytes, and builds their columns, which are then joined in file order. The
    columns are the same for any number of parts.
    """
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - every part reads this one file, even if it is replaced meanwhile
    except FileNotFoundError:
        raise SubmissionError(f"{path}: file not found") from None
    with file:
        size = os.fstat(file.fileno()).st_size
        num_parts = workers if workers else default_parts(size, BYTES_PER_PART)

        def read_part(part: int, num_parts: int):
            raw = _read_whole(file, size)
            with _gc_paused():
                try:
                    header = _decoder(file_kind).decode(raw)
                    entries = _decoder(list[entry_kind])
                    share = _share_of_videos(header.results, part, num_parts)
                    results = {video_id: entries.decode(value) for video_id, value in share.items()}
                except msgspec.DecodeError:  # also msgspec.ValidationError, its subclass
                    return None
                columns = build_columns(results)
            return msgspec.structs.replace(header, results={}) if part == 0 else None, columns

        parts = run_in_parts(read_part, num_parts)
    if any(part is None or part[1] is None for part in parts):
        return None
    return parts[0][0], PredictionColumns.concatenate([columns for _, columns in parts])


def _read_whole(file, size: int) -> bytes:
    """The ``size`` bytes of an open file from its start, by position (``os.pread``: the parts share
    the open file, not its offset), else by seeking where there is no ``pread`` (one part only)."""
    if not hasattr(os, "pread"):
        file.seek(0)
        return file.read()
    chunks, offset = [], 0
    while offset < size:  # one read, but a read may stop short (above 2 GB on Linux)
        chunk = os.pread(file.fileno(), size - offset, offset)
        if not chunk:
            break
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _share_of_videos(results: dict[str, msgspec.Raw], part: int, num_parts: int) -> dict[str, msgspec.Raw]:
    """The videos of part ``part`` of ``num_parts``: consecutive videos (in file order) whose entries
    hold about ``1 / num_parts`` of the bytes."""
    if num_parts == 1:
        return results
    bounds = contiguous_shares(np.fromiter(map(len, results.values()), np.int64, count=len(results)), num_parts)
    return dict(itertools.islice(results.items(), bounds[part], bounds[part + 1]))


def _typed_base_columns(results: dict[str, list[_ProposalEntry]]) -> tuple[list, PredictionColumns]:
    """(entries, columns) of decoded records; every number is finite (msgspec has no NaN and rejects
    numbers beyond float range). One pass over the entries a field, in C."""
    entries = list(chain.from_iterable(results.values()))
    start, end, score = (np.fromiter(map(attrgetter(path), entries), np.float64, count=len(entries))
                         for path in ("segment.start", "segment.end", "score"))
    return entries, _base_columns(results, np.stack([start, end], axis=1), score)


def _typed_hacs_columns(results: dict[str, list[_HacsEntry]]) -> PredictionColumns | None:
    entries, columns = _typed_base_columns(results)
    columns.label_code, columns.label_names = _encode(map(attrgetter("label"), entries), len(entries))
    return columns if all(columns.label_names) else None  # no empty class name


def _typed_ek100_columns(results: dict[str, list[_Ek100Entry]], num_verbs: int,
                         num_nouns: int) -> PredictionColumns | None:
    entries, columns = _typed_base_columns(results)
    for key, count in (("verb", num_verbs), ("noun", num_nouns)):
        columns.class_ids[key] = _class_id_column(map(attrgetter(key), entries), len(entries), count)
        if columns.class_ids[key] is None:
            return None
    action_ids = _action_columns(map(attrgetter("action"), entries), len(entries), num_verbs, num_nouns)
    if action_ids is None:
        return None
    columns.class_ids["action_verb"], columns.class_ids["action_noun"] = action_ids
    return columns


def load_hacs_columns(path: str | Path, workers: int | None = None) -> PredictionColumns:
    """:func:`hacs_prediction_columns` of a file (read the typed way, in ``workers`` processes (by
    default as :func:`read_typed` picks), else the validating way)."""
    typed = read_typed(path, _HacsFile, _HacsEntry, _typed_hacs_columns, workers)
    if typed is None:
        return hacs_prediction_columns(read_json(path), source=str(path))
    return typed[1]


def load_hacs_submission(path: str | Path) -> pd.DataFrame:
    """:func:`hacs_predictions` of a file (read the typed way, else the validating way)."""
    return load_hacs_columns(path).table()


def load_ek100_columns(
    path: str | Path, num_verbs: int = EK100_NUM_VERBS, num_nouns: int = EK100_NUM_NOUNS, workers: int | None = None
) -> PredictionColumns:
    """:func:`ek100_prediction_columns` of a file (read the typed way, in ``workers`` processes (by
    default as :func:`read_typed` picks), else the validating way)."""
    typed = read_typed(path, _Ek100File, _Ek100Entry,
                       lambda results: _typed_ek100_columns(results, num_verbs, num_nouns), workers)
    if typed is None:
        return ek100_prediction_columns(read_json(path), num_verbs, num_nouns, source=str(path))
    header, columns = typed
    _check_ek100_header({key: getattr(header, key) for key in ("version", "challenge", *SUPERVISION_LEVEL_KEYS)},
                        str(path))
    return columns


def load_ek100_submission(
    path: str | Path, num_verbs: int = EK100_NUM_VERBS, num_nouns: int = EK100_NUM_NOUNS
) -> pd.DataFrame:
    """:func:`ek100_predictions` of a file (read the typed way, else the validating way)."""
    return load_ek100_columns(path, num_verbs, num_nouns).table()


# ---------------------------------------------------------------------------------------------
# Building and writing (the classify and detect stages). Entries come from detections: objects with
# ``segments_sec`` (P, 2), ``scores`` (P,) and ``classes`` {head: (P,) class ids} (``localize.detections``).

HACS_VERSION = "VERSION 1.3"  # the ActivityNet / HACS evaluation code's version string
EK100_VERSION = "0.2"
EK100_CHALLENGE = "action_detection"


def hacs_entries(detections, class_names: list[str]) -> list[dict]:
    """One video's HACS entries ``{"label", "score", "segment"}``, in the detections' order."""
    return [{"label": class_names[label], "score": score, "segment": segment}
            for label, score, segment in zip(detections.classes["label"].tolist(), detections.scores.tolist(),
                                             detections.segments_sec.tolist())]


def ek100_entries(detections) -> list[dict]:
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
    """The validator the eval stage and ``python -m evaluation`` use; raises ``SubmissionError``.

    Args:
        submission: the file's content.
        style: "hacs" or "ek100".
        classes: head -> class names (EK100: the verb and noun counts bound the ids; HACS: labels
            must be among the names).
        source: the file name, for messages.
    """
    if style == "hacs":
        names = hacs_prediction_columns(submission, source).label_names
        unknown = sorted(set(names) - set(classes["label"]))
        if unknown:
            raise SubmissionError(f"{source}: labels {unknown[:5]} are not class names of the classifier")
    elif style == "ek100":
        ek100_prediction_columns(submission, len(classes["verb"]), len(classes["noun"]), source)
    else:
        raise ValueError(f"validate_submission: unknown style {style!r}, expected 'hacs' or 'ek100'")


def write_submission(submission: dict, path: str | Path, style: str, classes: dict[str, list[str]]) -> None:
    """Validate, then write atomically (``runstate.atomic``). Nothing is written when validation fails."""
    validate_submission(submission, style, classes, source=str(path))
    atomic.write_json(path, submission)
