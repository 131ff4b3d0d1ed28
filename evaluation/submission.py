"""Reading and validating submission files (HACS/ActivityNet detection, EK100 action detection) and
proposal files, into prediction tables.

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
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

EK100_VERSION = "0.2"
EK100_CHALLENGE = "action_detection"
SUPERVISION_LEVEL_KEYS = ("sls_pt", "sls_tl", "sls_td")
EK100_NUM_VERBS = 97
EK100_NUM_NOUNS = 300


class SubmissionError(ValueError):
    """A submission or proposal file is malformed; the message names the file, entry and field."""


def read_json(path: str | Path) -> dict:
    """Parse a JSON file whose top level must be an object."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: file not found") from None
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


# Validation runs in two passes. A bulk pass gathers each field over all entries and checks types
# and values with set() and numpy (a leaderboard file holds hundreds of thousands of entries); only
# when it finds a problem does the entry-by-entry pass run, to name the first bad entry.


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


def _bulk_base_columns(results: dict) -> tuple[list, dict] | None:
    """(entries, {video_id, start, end, score}) when every entry has a valid score and segment."""
    entries = [entry for video_entries in results.values() for entry in video_entries]
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
    video_ids = [str(video_id) for video_id, video_entries in results.items() for _ in video_entries]
    return entries, {"video_id": np.array(video_ids, dtype=object), "start": start, "end": end, "score": score}


def _bulk_hacs_columns(results: dict) -> dict | None:
    base = _bulk_base_columns(results)
    if base is None:
        return None
    entries, columns = base
    labels = [entry.get("label") for entry in entries]
    if not _all_of_types(labels, {str}) or "" in set(labels):
        return None
    columns["label_name"] = np.array(labels, dtype=object)
    return columns


def hacs_predictions(submission: dict, source: str = "submission") -> pd.DataFrame:
    """Validate a HACS/ActivityNet detection submission and return its predictions.

    Returns:
        DataFrame ``video_id, start, end, score, label_name`` in file order.
    """
    if not isinstance(submission.get("version"), str):
        raise SubmissionError(f"{source}: 'version' is missing or not a string")
    results = _results(submission, source)
    columns = _bulk_hacs_columns(results)
    if columns is None:
        columns = _bulk_hacs_columns(_scan(results, source, _check_hacs_entry))
    return pd.DataFrame(columns)


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


def _bulk_ek100_columns(results: dict, num_verbs: int, num_nouns: int) -> dict | None:
    base = _bulk_base_columns(results)
    if base is None:
        return None
    entries, columns = base
    for key, count in (("verb", num_verbs), ("noun", num_nouns)):
        values = [entry.get(key) for entry in entries]
        if not _all_of_types(values, {int}):
            return None
        ids = np.array(values, dtype=object).astype(np.float64) if values else np.zeros(0)
        if np.any((ids < 0) | (ids >= count)):
            return None
        columns[key] = ids.astype(np.int64)
    actions = [entry.get("action") for entry in entries]
    if not _all_of_types(actions, {str}):
        return None
    parsed = {action: _parse_action(action, num_verbs, num_nouns) for action in set(actions)}
    if any(pair is None for pair in parsed.values()):
        return None
    action_array = np.array([parsed[action] for action in actions], dtype=np.int64).reshape(-1, 2)
    # (N, 2) -> two (N,) columns: the action's verb and noun
    columns["action_verb"], columns["action_noun"] = action_array[:, 0], action_array[:, 1]
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
    results = _results(submission, source)
    columns = _bulk_ek100_columns(results, num_verbs, num_nouns)
    if columns is None:
        plain = _scan(results, source, _ek100_entry_checker(num_verbs, num_nouns))
        columns = _bulk_ek100_columns(plain, num_verbs, num_nouns)
    return pd.DataFrame(columns)


def proposal_predictions(proposals: dict, source: str = "proposals") -> pd.DataFrame:
    """Validate an ActivityNet-style proposal file and return ``video_id, start, end, score``."""
    results = _results(proposals, source)
    base = _bulk_base_columns(results)
    if base is None:
        base = _bulk_base_columns(_scan(results, source, _check_segment_and_score))
    return pd.DataFrame(base[1])


def load_hacs_submission(path: str | Path) -> pd.DataFrame:
    """:func:`hacs_predictions` of a file."""
    return hacs_predictions(read_json(path), source=str(path))


def load_ek100_submission(
    path: str | Path, num_verbs: int = EK100_NUM_VERBS, num_nouns: int = EK100_NUM_NOUNS
) -> pd.DataFrame:
    """:func:`ek100_predictions` of a file."""
    return ek100_predictions(read_json(path), num_verbs, num_nouns, source=str(path))


def load_proposals(path: str | Path) -> pd.DataFrame:
    """:func:`proposal_predictions` of a file."""
    return proposal_predictions(read_json(path), source=str(path))
