"""Submission and proposal file validation: each malformed field is named with its video and index."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from formats.proposals import load_proposals
from formats.submission import (
    SubmissionError,
    ek100_predictions,
    hacs_predictions,
    load_ek100_submission,
    read_json,
)


def ek100_submission() -> dict:
    return {
        "version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 3, "sls_td": 5,
        "results": {
            "P01_11": [
                {"verb": 0, "noun": 2, "action": "0,2", "score": 0.9, "segment": [0.0, 1.89]},
                {"verb": 96, "noun": 299, "action": "96,299", "score": 1, "segment": [1.56, 2.45]},
            ],
            "P02_01": [{"verb": 3, "noun": 4, "action": "5,6", "score": 0.1, "segment": [3, 4.5]}],
        },
    }


def hacs_submission() -> dict:
    return {
        "version": "VERSION 1.3", "external_data": {"used": False},
        "results": {
            "vid_a": [{"label": "Archery", "score": 0.5, "segment": [1.0, 2.5]}],
            "vid_b": [{"label": "Bowling", "score": 0.25, "segment": [0, 10]},
                      {"label": "Archery", "score": 0.75, "segment": [3.5, 4.0]}],
        },
    }


def test_valid_ek100_submission_becomes_a_table():
    table = ek100_predictions(ek100_submission())
    assert list(table["video_id"]) == ["P01_11", "P01_11", "P02_01"]
    np.testing.assert_array_equal(table[["start", "end"]].to_numpy(), [[0.0, 1.89], [1.56, 2.45], [3, 4.5]])
    np.testing.assert_array_equal(table["score"], [0.9, 1.0, 0.1])
    np.testing.assert_array_equal(table["verb"], [0, 96, 3])
    np.testing.assert_array_equal(table["noun"], [2, 299, 4])
    # the action is read from its own string, which may differ from verb/noun (the server allows it)
    np.testing.assert_array_equal(table["action_verb"], [0, 96, 5])
    np.testing.assert_array_equal(table["action_noun"], [2, 299, 6])


def test_number_subclasses_and_tuples_take_the_entry_by_entry_path():
    # numpy scalars (e.g. a submission dict built in memory) are numbers too; same table either way
    submission = ek100_submission()
    for entries in submission["results"].values():
        for entry in entries:
            entry["score"] = np.float64(entry["score"])
            entry["segment"] = tuple(np.float32(v) for v in entry["segment"])
            entry["verb"] = np.int16(entry["verb"])
    table = ek100_predictions(submission)
    expected = ek100_predictions(ek100_submission())
    np.testing.assert_allclose(table[["start", "end", "score"]].to_numpy(),
                               expected[["start", "end", "score"]].to_numpy(), rtol=1e-6)
    assert table[["verb", "noun", "action_verb", "action_noun"]].equals(
        expected[["verb", "noun", "action_verb", "action_noun"]])


def test_valid_hacs_submission_becomes_a_table():
    table = hacs_predictions(hacs_submission())
    assert list(table["video_id"]) == ["vid_a", "vid_b", "vid_b"]
    assert list(table["label_name"]) == ["Archery", "Bowling", "Archery"]
    np.testing.assert_array_equal(table["score"], [0.5, 0.25, 0.75])
    np.testing.assert_array_equal(table["end"], [2.5, 10, 4.0])


def mutate(submission: dict, path: tuple, value) -> dict:
    changed = copy.deepcopy(submission)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


EK100_BAD = [
    (("version",), "0.1", "'version' is '0.1'"),
    (("version",), KeyError, "missing 'version'"),
    (("challenge",), "action_recognition", "'challenge' is 'action_recognition'"),
    (("sls_pt",), KeyError, "missing 'sls_pt'"),
    (("sls_tl",), 6, "'sls_tl' must be an integer 0..5, got 6"),
    (("sls_td",), 2.5, "'sls_td' must be an integer 0..5"),
    (("sls_pt",), True, "'sls_pt' must be an integer 0..5"),
    (("results",), [], "'results' is missing"),
    (("results", "P02_01"), {"verb": 1}, r"results\['P02_01'\] must be a list"),
    (("results", "P01_11", 1, "verb"), 97, r"results\['P01_11'\]\[1\], field 'verb': .* 0..96, got 97"),
    (("results", "P01_11", 1, "verb"), "3", r"results\['P01_11'\]\[1\], field 'verb'"),
    (("results", "P01_11", 0, "noun"), -1, r"results\['P01_11'\]\[0\], field 'noun'"),
    (("results", "P01_11", 0, "noun"), 2.0, r"results\['P01_11'\]\[0\], field 'noun'"),
    (("results", "P01_11", 0, "noun"), KeyError, r"\[0\], field 'noun'"),
    (("results", "P02_01", 0, "action"), "5;6", r"results\['P02_01'\]\[0\], field 'action'.*'5;6'"),
    (("results", "P02_01", 0, "action"), "5,300", r"field 'action'"),
    (("results", "P02_01", 0, "action"), [5, 6], r"field 'action'"),
    (("results", "P02_01", 0, "action"), KeyError, r"field 'action'"),
    (("results", "P02_01", 0, "score"), float("nan"), r"results\['P02_01'\]\[0\], field 'score'"),
    (("results", "P02_01", 0, "score"), "0.5", r"field 'score'"),
    (("results", "P02_01", 0, "score"), KeyError, r"field 'score'"),
    (("results", "P02_01", 0, "segment"), [1.0], r"results\['P02_01'\]\[0\], field 'segment'"),
    (("results", "P02_01", 0, "segment"), [1.0, float("inf")], r"field 'segment'"),
    (("results", "P02_01", 0, "segment"), [1.0, None], r"field 'segment'"),
    (("results", "P02_01", 0, "segment"), "1,2", r"field 'segment'"),
    (("results", "P02_01", 0), 7, r"results\['P02_01'\]\[0\]: must be an object"),
]


@pytest.mark.parametrize(("path", "value", "message"), EK100_BAD)
def test_ek100_invalid_entries_are_named(path, value, message):
    with pytest.raises(SubmissionError, match=message):
        ek100_predictions(mutate(ek100_submission(), path, value), source="sub.json")


def test_ek100_first_bad_entry_is_the_one_reported():
    submission = mutate(ek100_submission(), ("results", "P01_11", 1, "score"), None)
    submission = mutate(submission, ("results", "P02_01", 0, "score"), None)
    with pytest.raises(SubmissionError, match=r"^sub.json: results\['P01_11'\]\[1\], field 'score'"):
        ek100_predictions(submission, source="sub.json")


def test_ek100_class_counts_come_from_the_arguments():
    # verb 96 is valid for EK100's 97 verbs, not for a dataset with 4
    with pytest.raises(SubmissionError, match=r"\['P01_11'\]\[1\], field 'verb': .* 0..3, got 96"):
        ek100_predictions(ek100_submission(), num_verbs=4, num_nouns=300)


HACS_BAD = [
    (("version",), KeyError, "'version' is missing"),
    (("results",), KeyError, "'results' is missing"),
    (("results", "vid_b", 1, "label"), 3, r"results\['vid_b'\]\[1\], field 'label'"),
    (("results", "vid_b", 1, "label"), "", r"field 'label'"),
    (("results", "vid_b", 0, "score"), float("-inf"), r"results\['vid_b'\]\[0\], field 'score'"),
    (("results", "vid_b", 0, "score"), False, r"field 'score'"),
    (("results", "vid_a", 0, "segment"), [1, 2, 3], r"results\['vid_a'\]\[0\], field 'segment'"),
]


@pytest.mark.parametrize(("path", "value", "message"), HACS_BAD)
def test_hacs_invalid_entries_are_named(path, value, message):
    with pytest.raises(SubmissionError, match=message):
        hacs_predictions(mutate(hacs_submission(), path, value))


def test_files_and_proposals(tmp_path):
    path = tmp_path / "sub.json"
    path.write_text(json.dumps(ek100_submission()))
    assert len(load_ek100_submission(path)) == 3
    with pytest.raises(SubmissionError, match="file not found"):
        read_json(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"results": ')
    with pytest.raises(SubmissionError, match="broken.json: not valid JSON"):
        read_json(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(SubmissionError, match="top level must be a JSON object"):
        read_json(tmp_path / "list.json")

    proposals = {"version": "1", "results": {"v": [{"segment": [0, 1], "score": 0.5},
                                                   {"segment": [2, 1.5], "score": 0.25}]}}
    (tmp_path / "props.json").write_text(json.dumps(proposals))
    table = load_proposals(tmp_path / "props.json")
    np.testing.assert_array_equal(table[["start", "end", "score"]].to_numpy(), [[0, 1, 0.5], [2, 1.5, 0.25]])
    proposals["results"]["v"][1]["score"] = None
    (tmp_path / "props.json").write_text(json.dumps(proposals))
    with pytest.raises(SubmissionError, match=r"props.json: results\['v'\]\[1\], field 'score'"):
        load_proposals(tmp_path / "props.json")
