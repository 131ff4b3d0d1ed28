"""Reading files the typed way (msgspec records) against the validating way (json + the checks of
formats/submission.py): the same tables for valid files, the same messages for invalid ones, and
the same numbers as Python's json for every float text."""

from __future__ import annotations

import copy
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from data.annotations import AnnotationError, load_hacs_json
from formats import submission
from formats.proposals import load_proposal_columns, load_proposals, proposal_predictions
from formats.submission import (
    SubmissionError,
    ek100_predictions,
    hacs_predictions,
    load_ek100_submission,
    load_hacs_submission,
    read_json,
)
from tests.formats.test_formats_submission import (
    EK100_BAD,
    HACS_BAD,
    ek100_submission,
    hacs_submission,
    mutate,
)


def write(path, content) -> str:
    """JSON as Python writes it (NaN and Infinity included)."""
    path.write_text(json.dumps(content))
    return str(path)


def validating_way(kind: str, path: str) -> pd.DataFrame:
    """The loaders' fallback, run on its own: json + the checks on dicts."""
    content = read_json(path)
    if kind == "hacs":
        return hacs_predictions(content, source=path)
    if kind == "ek100":
        return ek100_predictions(content, source=path)
    return proposal_predictions(content, source=path)


LOADERS = {"hacs": load_hacs_submission, "ek100": load_ek100_submission, "proposals": load_proposals}


def random_results(rng: np.random.Generator, kind: str) -> dict:
    """A valid submission's results with numbers of every kind JSON allows: ints, floats written
    with 17 digits, tiny and huge magnitudes, negative zero; labels repeating across videos."""
    def number():
        choice = rng.integers(0, 5)
        if choice == 0:
            return int(rng.integers(-5, 500))
        if choice == 1:
            return float(rng.uniform(-10, 300))
        if choice == 2:
            return float(rng.uniform(0, 1) * 10.0 ** rng.integers(-300, 300))
        if choice == 3:
            return -0.0
        return round(float(rng.uniform(0, 100)), 2)

    results = {}
    for video in range(int(rng.integers(0, 6))):
        entries = []
        for _ in range(int(rng.integers(0, 7))):
            entry = {"score": number(), "segment": [number(), number()]}
            if kind == "hacs":
                entry["label"] = ["Archery", "Bowling", "Curling ü", "a,b"][int(rng.integers(0, 4))]
            if kind == "ek100":
                verb, noun = int(rng.integers(0, 97)), int(rng.integers(0, 300))
                entry.update(verb=verb, noun=noun, action=f"{int(rng.integers(0, 97))},{int(rng.integers(0, 300))}")
            if rng.random() < 0.2:
                entry["extra"] = {"ignored": [1, 2]}
            entries.append(entry)
        results[f"video_{video}"] = entries
    return results


def as_file_content(kind: str, results: dict) -> dict:
    if kind == "hacs":
        return {"version": "VERSION 1.3", "results": results}
    if kind == "ek100":
        return {"version": "0.2", "challenge": "action_detection", "sls_pt": 1, "sls_tl": 2, "sls_td": 3,
                "results": results}
    return {"version": "1", "results": results}


@pytest.mark.parametrize("kind", ["hacs", "ek100", "proposals"])
def test_typed_way_gives_the_validating_way_table(tmp_path, kind):
    rng = np.random.default_rng(11)
    for trial in range(40):
        path = write(tmp_path / f"{trial}.json", as_file_content(kind, random_results(rng, kind)))
        typed = LOADERS[kind](path)
        expected = validating_way(kind, path)
        pd.testing.assert_frame_equal(typed, expected, check_exact=True)


def test_typed_way_is_the_one_taken_for_valid_files(tmp_path, monkeypatch):
    # A valid file never reaches the validating way (which is several times slower).
    path = write(tmp_path / "sub.json", hacs_submission())
    monkeypatch.setattr(submission, "read_json", lambda path: pytest.fail("validating way taken"))
    assert list(load_hacs_submission(path)["label_name"]) == ["Archery", "Bowling", "Archery"]


@pytest.mark.parametrize(("path", "value", "message"), EK100_BAD)
def test_ek100_file_errors_name_the_entry(tmp_path, path, value, message):
    file = write(tmp_path / "sub.json", mutate(ek100_submission(), path, value))
    with pytest.raises(SubmissionError, match=message):
        load_ek100_submission(file)


@pytest.mark.parametrize(("path", "value", "message"), HACS_BAD)
def test_hacs_file_errors_name_the_entry(tmp_path, path, value, message):
    file = write(tmp_path / "sub.json", mutate(hacs_submission(), path, value))
    with pytest.raises(SubmissionError, match=message):
        load_hacs_submission(file)


def outcome(function, *args):
    """The table, or the error message."""
    try:
        return function(*args)
    except SubmissionError as error:
        return str(error)


MUTATIONS = [None, True, False, "", "3", "0,1", "0;1", 1.5, 2.0, -1, 97, 300, 10**30, 1e300, float("nan"),
             float("inf"), [], [1.0], [1.0, 2.0], [1.0, 2.0, 3.0], [True, 1.0], ["1", 2.0], {}, {"a": 1}, KeyError]


@pytest.mark.parametrize("kind", ["hacs", "ek100", "proposals"])
def test_mutated_files_are_read_as_the_validating_way_reads_them(tmp_path, kind):
    # Random damage anywhere in a valid file: the loader (typed way, then the validating way when the
    # typed way rejects) and the validating way alone give the same table or the same message.
    rng = random.Random(5)
    base = as_file_content(kind, random_results(np.random.default_rng(3), kind))
    base["results"].setdefault("video_x", []).append(
        {"score": 0.5, "segment": [1.0, 2.0], "label": "Archery", "verb": 1, "noun": 2, "action": "1,2"})
    fields = {"hacs": ["score", "segment", "label"], "ek100": ["score", "segment", "verb", "noun", "action"],
              "proposals": ["score", "segment"]}[kind]
    headers = {"hacs": ["version", "results"], "ek100": ["version", "challenge", "sls_pt", "sls_td", "results"],
               "proposals": ["results"]}[kind]
    for trial in range(120):
        content = copy.deepcopy(base)
        if rng.random() < 0.2:
            key_path = (rng.choice(headers),)
        else:
            video = rng.choice([v for v, entries in content["results"].items() if entries])
            index = rng.randrange(len(content["results"][video]))
            key_path = ("results", video, index) if rng.random() < 0.1 else (
                "results", video, index, rng.choice(fields))
        content = mutate(content, key_path, rng.choice(MUTATIONS))
        path = write(tmp_path / f"{trial}.json", content)
        typed, expected = outcome(LOADERS[kind], path), outcome(validating_way, kind, path)
        if isinstance(expected, str):
            assert typed == expected, key_path
        else:
            pd.testing.assert_frame_equal(typed, expected, check_exact=True)


def test_non_standard_json_is_read_as_python_reads_it(tmp_path):
    # msgspec accepts strict JSON only; NaN, Infinity and numbers beyond float range go to Python's
    # json, which reads them, so the message names the field (not "not valid JSON").
    (tmp_path / "nan.json").write_text('{"version": "1", "results": {"v": [{"score": NaN, "segment": [0, 1]}]}}')
    with pytest.raises(SubmissionError, match=r"results\['v'\]\[0\], field 'score'.*nan"):
        load_proposals(tmp_path / "nan.json")
    (tmp_path / "big.json").write_text('{"version": "1", "results": {"v": [{"score": 1, "segment": [0, 1e400]}]}}')
    with pytest.raises(SubmissionError, match=r"field 'segment'.*inf"):
        load_proposals(tmp_path / "big.json")
    assert read_json(tmp_path / "nan.json")["results"]["v"][0]["score"] != 0  # NaN, read
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf{}")
    with pytest.raises(SubmissionError, match="bom.json: not valid JSON"):
        read_json(tmp_path / "bom.json")
    (tmp_path / "latin1.json").write_bytes(b'{"version": "1", "results": {"caf\xe9": []}}')
    with pytest.raises(SubmissionError, match="latin1.json: not valid JSON"):
        load_proposals(tmp_path / "latin1.json")
    with pytest.raises(SubmissionError, match="file not found"):
        load_hacs_submission(tmp_path / "missing.json")


def float_texts(count: int) -> list[str]:
    """Number texts that stress a float parser: 17-digit reprs, random bit patterns (subnormals
    included), long mantissas, extreme exponents."""
    rng = random.Random(0)
    texts = []
    while len(texts) < count:
        kind = len(texts) % 5
        if kind == 0:
            text = repr(rng.random() * 10.0 ** rng.randint(-30, 30))
        elif kind == 1:
            value = np.frombuffer(rng.getrandbits(63).to_bytes(8, "little"), dtype=np.float64)[0]
            text = repr(float(value))
        elif kind == 2:
            text = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 30))) \
                + "." + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))
        elif kind == 3:
            text = f"{rng.randint(1, 10**20)}e{rng.randint(-340, 280)}"
        else:
            text = f"{rng.uniform(0, 300):.17g}"
        if math.isfinite(float(text)) and "n" not in text:
            texts.append(text)
    return texts


def test_segments_and_scores_are_the_floats_python_reads(tmp_path):
    texts = float_texts(20_000)
    entries = ",".join(f'{{"score": {t}, "segment": [{t}, {texts[i - 1]}]}}' for i, t in enumerate(texts))
    path = tmp_path / "numbers.json"
    path.write_text(f'{{"version": "1", "results": {{"v": [{entries}]}}}}')
    table = load_proposals(path)
    expected = np.array([float(t) for t in texts])
    np.testing.assert_array_equal(table["score"].to_numpy(), expected)
    np.testing.assert_array_equal(table["start"].to_numpy(), expected)
    np.testing.assert_array_equal(table["end"].to_numpy(), np.roll(expected, 1))


def test_hacs_ground_truth_parses_as_before(tmp_path):
    texts = float_texts(2_000)
    database = {f"v{i}": {"subset": "validation", "duration": 1e6,
                          "annotations": [{"label": "a", "segment": [float(texts[i]), float(texts[i]) + 1]}]}
                for i in range(len(texts))}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps({"database": database}))
    starts = load_hacs_json(path).segments["start"].to_numpy()
    np.testing.assert_array_equal(starts, [float(t) for t in texts])
    # what strict JSON parsers reject still reaches Python's json: NaN is named as a field, a
    # malformed file by its line
    path.write_text('{"database": {"v": {"subset": "validation", "duration": NaN}}}')
    with pytest.raises(AnnotationError, match="duration.*finite"):
        load_hacs_json(path)
    path.write_text('{"database": {\n"v": }')
    with pytest.raises(AnnotationError, match="line 2.*not valid JSON"):
        load_hacs_json(path)


def test_command_line_does_not_load_matplotlib():
    code = "import sys, evaluation.cli, evaluation.stage; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


COLUMN_LOADERS = {"hacs": submission.load_hacs_columns, "ek100": submission.load_ek100_columns,
                  "proposals": load_proposal_columns}


def assert_same_columns(actual: submission.PredictionColumns, expected: submission.PredictionColumns) -> None:
    for name in ("video_ids", "video_sizes", "segments", "score"):
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=name)
    assert actual.label_names == expected.label_names
    if expected.label_code is None:
        assert actual.label_code is None
    else:
        np.testing.assert_array_equal(actual.label_code, expected.label_code)
    assert actual.class_ids.keys() == expected.class_ids.keys()
    for key, ids in expected.class_ids.items():
        np.testing.assert_array_equal(actual.class_ids[key], ids, err_msg=key)


@pytest.mark.parametrize("kind", ["hacs", "ek100", "proposals"])
def test_a_file_read_in_parts_gives_the_columns_read_at_once(tmp_path, kind):
    # Any number of worker processes (more than videos, too): the same columns, class names in their
    # order of first appearance over the whole file, as the validating way gives.
    rng = np.random.default_rng(4)
    for trial in range(12):
        results = {}
        for _ in range(4):  # a few random sets side by side: up to 20 videos, labels first seen late
            results.update({f"{len(results) + i}_{video}": entries
                            for i, (video, entries) in enumerate(random_results(rng, kind).items())})
        path = write(tmp_path / f"{trial}.json", as_file_content(kind, results))
        at_once = COLUMN_LOADERS[kind](path, workers=1)
        pd.testing.assert_frame_equal(at_once.table(), validating_way(kind, path), check_exact=True)
        for workers in (2, 3, 7):
            assert_same_columns(COLUMN_LOADERS[kind](path, workers=workers), at_once)


@pytest.mark.parametrize("kind", ["hacs", "ek100"])
def test_a_bad_entry_in_a_later_part_is_named(tmp_path, kind):
    content = as_file_content(kind, {f"video_{i}": [{"score": 0.5, "segment": [1.0, 2.0], "label": "Archery",
                                                    "verb": 1, "noun": 2, "action": "1,2"}] for i in range(6)})
    content["results"]["video_5"][0]["segment"] = [3.0, "late"]
    path = write(tmp_path / "sub.json", content)
    expected = outcome(validating_way, kind, path)
    assert "video_5" in expected and "segment" in expected
    assert outcome(COLUMN_LOADERS[kind], path, *([97, 300] if kind == "ek100" else []), 3) == expected


def test_a_file_is_read_whole_without_pread_and_in_short_reads(tmp_path, monkeypatch):
    # Where os.pread is missing (one part), and where each read stops short: the same columns.
    path = write(tmp_path / "sub.json", as_file_content("hacs", random_results(np.random.default_rng(8), "hacs")))
    expected = submission.load_hacs_columns(path, workers=1)
    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, size, offset: real_pread(fd, min(size, 7), offset))
    assert_same_columns(submission.load_hacs_columns(path, workers=1), expected)
    monkeypatch.delattr(os, "pread")
    assert_same_columns(submission.load_hacs_columns(path, workers=1), expected)
