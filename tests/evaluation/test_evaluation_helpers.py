"""The sorting helpers against numpy's own sorts, the terminal tables against the report's, and the
EK100 action names against plain formatting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from data.annotations import Annotations, hacs_annotations
from data.hacs_json import read_hacs_json
from evaluation import evaluate, report
from evaluation.detection import LabelError, average_precision, evaluate_hacs
from evaluation.evaluate import evaluate_detections, score_detections
from evaluation.proposal import average_recall
from evaluation.tiou import _ordered_int64, dense_rank, group_then_score_order, stable_argsort
from formats.submission import hacs_prediction_columns, hacs_predictions


def test_stable_argsort_is_numpys_stable_argsort():
    rng = np.random.default_rng(0)
    for size, high in ((0, 1), (1, 1), (1000, 3), (5000, 10**6), (300, 2**40)):
        values = rng.integers(0, high, size)
        np.testing.assert_array_equal(stable_argsort(values), np.argsort(values, kind="stable"))
    huge = np.array([2**62, 5, 2**62, 0])  # value * N would overflow: numpy's sort is used
    np.testing.assert_array_equal(stable_argsort(huge), [3, 1, 0, 2])


def test_group_then_score_order_is_lexsort():
    rng = np.random.default_rng(1)
    for size in (0, 1, 50, 20000):
        groups = rng.integers(0, 7, size)
        scores = rng.integers(-3, 4, size) / 2.0  # many ties, negative and positive
        scores[rng.random(size) < 0.1] = -0.0  # equal to 0.0: ties with it, in input order
        expected = np.lexsort((-scores, groups))
        np.testing.assert_array_equal(group_then_score_order(groups, scores), expected)
    groups = np.array([2**61, 0, 2**61])  # the integer key would overflow: np.lexsort is used
    np.testing.assert_array_equal(group_then_score_order(groups, np.array([0.5, 0.1, 0.9])), [1, 2, 0])


def test_dense_rank_and_ordered_keys():
    values = np.array([0.5, -1.0, 0.5, 3.0, -0.0, 0.0, -np.inf, 1e-310, -1e-310])
    # distinct, ascending: -inf, -1, -1e-310, 0 (= -0), 1e-310, 0.5, 3
    np.testing.assert_array_equal(dense_rank(values), [5, 1, 5, 6, 3, 3, 0, 4, 2])
    keys = _ordered_int64(values)
    rng = np.random.default_rng(2)
    pairs = rng.integers(0, len(values), (500, 2))
    a, b = values[pairs[:, 0]], values[pairs[:, 1]]
    np.testing.assert_array_equal(keys[pairs[:, 0]] < keys[pairs[:, 1]], a < b)
    np.testing.assert_array_equal(keys[pairs[:, 0]] == keys[pairs[:, 1]], a == b)


def test_terminal_tables_are_the_reports_tables():
    rng = np.random.default_rng(3)
    gt = pd.DataFrame({"video_id": ["v"] * 4, "start": [0.0, 10, 20, 30], "end": [5.0, 15, 25, 35],
                       "label": [0, 1, 1, 2]})
    preds = gt.assign(score=rng.random(4), start=gt["start"] + 1)
    results = {"verb": average_precision(gt, preds, [0.1, 0.5, 0.9]),
               "action": average_precision(gt, preds.iloc[:2], [0.1, 0.5, 0.9])}
    for markdown in (False, True):
        assert evaluate.detection_table(results, markdown) == report.detection_table(results, markdown)
    proposals = average_recall(gt, preds[["video_id", "start", "end", "score"]])
    for markdown in (False, True):
        assert evaluate.proposal_table(proposals, markdown) == report.proposal_table(proposals, markdown)


def test_ek100_names_of_ground_truth_and_predictions(tmp_path):
    verbs, nouns = ["take", "put", "open"], ["cup", "lid"]
    segments = pd.DataFrame({"video_id": ["P01_01"] * 3, "start": [0.0, 5.0, 9.0], "end": [4.0, 8.0, 12.0],
                             "label": [1, 4, 3], "subset": "validation", "verb": [0, 2, 1], "noun": [1, 0, 1]})
    annotations = Annotations(segments, pd.DataFrame(), {"verb": verbs, "noun": nouns})
    results = {"P01_01": [{"verb": v, "noun": n, "action": f"{a},{b}", "score": 0.5, "segment": [0.0, 4.0]}
                          for v, n, a, b in ((0, 1, 0, 1), (2, 0, 1, 0), (1, 1, 2, 1), (0, 1, 0, 1))]}
    path = tmp_path / "submission.json"
    path.write_text(json.dumps({"version": "0.2", "challenge": "action_detection", "sls_pt": 0, "sls_tl": 0,
                                "sls_td": 0, "results": results}))
    evaluation = evaluate_detections("ek100", annotations, path)
    assert list(evaluation.ground_truth["name"]) == ["take lid", "open cup", "put lid"]
    # the predictions are named by their action string
    assert list(evaluation.predictions["name"]) == ["take lid", "put cup", "open lid", "take lid"]


@pytest.mark.parametrize("count", [0, 1])
def test_action_names_of_tiny_tables(count):
    names = evaluate._action_names(pd.Series([1] * count), pd.Series([0] * count), ["a", "b"], ["x"])
    assert list(names) == ["b x"] * count


def random_hacs_files(rng: np.random.Generator, tmp_path) -> tuple[dict, dict]:
    """A HACS ground truth (two subsets, a video without segments) and a submission (a video
    outside the ground truth, repeated segments and scores), on a half-second grid."""
    names = ["Archery", "Bowling", "Curling", "Diving"]
    database = {}
    for video in range(6):
        starts = rng.integers(0, 20, int(rng.integers(0, 4))) * 0.5
        database[f"v{video}"] = {"subset": ["validation", "training"][video % 2], "duration": 30.0, "annotations": [
            {"label": names[int(rng.integers(0, 3))], "segment": [s, s + float(rng.integers(1, 8)) * 0.5]}
            for s in starts]}
    results = {}
    for video in range(7):
        starts = rng.integers(0, 20, int(rng.integers(0, 30))) * 0.5
        results[f"v{video}"] = [{"label": names[int(rng.integers(0, 3))], "score": float(rng.integers(0, 5)) / 4,
                                 "segment": [s, s + float(rng.integers(1, 8)) * 0.5]} for s in starts]
    (tmp_path / "gt.json").write_text(json.dumps({"database": database}))
    return {"database": database}, {"version": "1", "results": results}


def test_hacs_columns_score_as_the_tables(tmp_path):
    # The command line's way (the files' columns) against the tables' (evaluate_hacs on DataFrames):
    # the same AP to the last bit, the same names, the same error for a label without ground truth.
    rng = np.random.default_rng(3)
    for _ in range(30):
        _, submission = random_hacs_files(rng, tmp_path)
        ground_truth = read_hacs_json(tmp_path / "gt.json")
        annotations = hacs_annotations(ground_truth)
        columns = hacs_prediction_columns(submission)
        outcomes = []
        for way in ("tables", "columns", "annotations' columns"):
            try:
                if way == "tables":
                    result = evaluate_hacs(annotations.segments, annotations.classes["label"],
                                           hacs_predictions(submission))
                else:
                    truth = ground_truth if way == "columns" else annotations
                    result = score_detections("hacs", truth, columns).results["label"]
                outcomes.append((result.ap.tolist(), result.class_names, result.num_predictions.tolist()))
            except (LabelError, ValueError) as error:
                outcomes.append(str(error))
        assert outcomes[0] == outcomes[1] == outcomes[2]
