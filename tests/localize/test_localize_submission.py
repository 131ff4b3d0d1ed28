"""Submission files (validated before writing, atomic) and the resume journal / failure list."""

import json

import numpy as np
import pytest

from formats.failures import FailureList, read_failures
from formats.submission import (
    SubmissionError,
    ek100_entries,
    ek100_submission,
    hacs_entries,
    hacs_submission,
    load_ek100_submission,
    load_hacs_submission,
    write_submission,
)
from localize.detections import Detections
from runstate.journal import Journal

EK_CLASSES = {"verb": ["take", "put", "open"], "noun": ["cup", "pan"]}
HACS_CLASSES = {"label": ["Archery", "Bowling", "Surfing"]}


def ek_detections():
    return Detections(np.array([[1.0, 2.5], [0.0, 4.0]]), np.array([0.75, 0.5]),
                      {"verb": np.array([2, 0]), "noun": np.array([1, 1])})


def test_entries_hand_worked():
    assert ek100_entries(ek_detections()) == [
        {"verb": 2, "noun": 1, "action": "2,1", "score": 0.75, "segment": [1.0, 2.5]},
        {"verb": 0, "noun": 1, "action": "0,1", "score": 0.5, "segment": [0.0, 4.0]},
    ]
    hacs = Detections(np.array([[3.0, 9.0]]), np.array([0.25]), {"label": np.array([1])})
    entries = hacs_entries(hacs, HACS_CLASSES["label"])
    assert entries == [{"label": "Bowling", "score": 0.25, "segment": [3.0, 9.0]}]
    assert type(entries[0]["score"]) is float and type(entries[0]["segment"][0]) is float


def test_ek100_file_written_and_read_back_by_the_evaluator(tmp_path):
    path = tmp_path / "detections" / "submission.json"
    submission = ek100_submission({"P01_01": ek100_entries(ek_detections()), "P01_02": []}, 2, 3, 4)
    write_submission(submission, path, "ek100", EK_CLASSES)
    content = json.loads(path.read_text())
    assert {key: content[key] for key in ("version", "challenge", "sls_pt", "sls_tl", "sls_td")} == {
        "version": "0.2", "challenge": "action_detection", "sls_pt": 2, "sls_tl": 3, "sls_td": 4}
    predictions = load_ek100_submission(path, num_verbs=3, num_nouns=2)
    assert predictions["verb"].tolist() == [2, 0] and predictions["score"].tolist() == [0.75, 0.5]
    assert sorted(p.name for p in path.parent.iterdir()) == ["submission.json"]  # no temporary left


def test_hacs_file_written_and_read_back(tmp_path):
    path = tmp_path / "submission.json"
    hacs = Detections(np.array([[3.0, 9.0]]), np.array([0.25]), {"label": np.array([2])})
    write_submission(hacs_submission({"v1": hacs_entries(hacs, HACS_CLASSES["label"])}, True, "K400"), path,
                     "hacs", HACS_CLASSES)
    content = json.loads(path.read_text())
    assert content["external_data"] == {"used": True, "details": "K400"}
    assert load_hacs_submission(path)["label_name"].tolist() == ["Surfing"]


@pytest.mark.parametrize("breakage, message", [
    (lambda s: s["results"]["P01_01"][0].update(verb=3), "field 'verb'"),  # only 3 verbs: 0..2
    (lambda s: s["results"]["P01_01"][1].update(action="0;1"), "field 'action'"),
    (lambda s: s["results"]["P01_01"][1].update(score=float("nan")), "field 'score'"),
    (lambda s: s.pop("sls_tl"), "sls_tl"),
    (lambda s: s.update(version="0.1"), "version"),
])
def test_broken_ek100_submission_is_refused_and_not_written(tmp_path, breakage, message):
    path = tmp_path / "submission.json"
    submission = ek100_submission({"P01_01": ek100_entries(ek_detections())}, 2, 3, 3)
    breakage(submission)
    with pytest.raises(SubmissionError, match=message):
        write_submission(submission, path, "ek100", EK_CLASSES)
    assert not path.exists()


def test_broken_hacs_submission_is_refused(tmp_path):
    entry = {"label": "Curling", "score": 0.5, "segment": [0.0, 1.0]}  # not a class of the classifier
    with pytest.raises(SubmissionError, match="Curling"):
        write_submission(hacs_submission({"v": [entry]}, False, ""), tmp_path / "s.json", "hacs",
                         HACS_CLASSES)
    with pytest.raises(SubmissionError, match="field 'label'"):
        write_submission(hacs_submission({"v": [dict(entry, label="")]}, False, ""), tmp_path / "s.json",
                         "hacs", HACS_CLASSES)
    assert not (tmp_path / "s.json").exists()


def test_journal_resumes_and_drops_a_cut_line(tmp_path):
    path = tmp_path / "partial.jsonl"
    with Journal(path, "fp1") as journal:
        journal.add("a", [{"score": 1.0}])
        journal.add("b", [])
    with open(path, "a") as handle:  # a kill in the middle of the third line
        handle.write('{"video_id": "c", "entr')
    with Journal(path, "fp1") as journal:
        assert journal.entries == {"a": [{"score": 1.0}], "b": []}
        assert "a" in journal and "c" not in journal
        journal.add("c", [{"score": 0.5}])
    with Journal(path, "fp1") as journal:
        assert list(journal.entries) == ["a", "b", "c"]
    with Journal(path, "fp2") as journal:  # other inputs or settings: start afresh
        assert journal.entries == {}
    assert path.read_text().splitlines() == ['{"fingerprint": "fp2"}']


def test_journal_with_a_bad_middle_line_is_an_error(tmp_path):
    path = tmp_path / "partial.jsonl"
    path.write_text('{"fingerprint": "fp"}\nnot json\n{"video_id": "a", "entries": []}\n')
    with pytest.raises(ValueError, match="line 2"):
        Journal(path, "fp")


def test_failure_list(tmp_path):
    path = tmp_path / "failed.tsv"
    path.write_text("stale\n")
    failures = FailureList(path)
    assert not path.exists()  # an earlier run's list is removed
    failures.add("v1", "/videos/v1.mp4", "VideoError: cannot\ndecode")
    failures.add("v2", "", "MissingFeatures: none")
    assert len(failures) == 2
    assert read_failures(path) == [("v1", "/videos/v1.mp4", "VideoError: cannot decode"),
                                   ("v2", "", "MissingFeatures: none")]
