"""Detection average mAP: hand-worked cases for each protocol rule, and random cross-checks of the
vectorized code against the loop-by-loop reference (evaluation/reference.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation import detection
from evaluation.detection import (
    EK100_TIOU_THRESHOLDS,
    HACS_TIOU_THRESHOLDS,
    LabelError,
    SegmentColumns,
    average_precision,
    average_precision_of_columns,
    evaluate_ek100,
    evaluate_hacs,
)
from evaluation.reference import average_precision_table, official_interpolated_ap


def gt_table(rows: list[tuple]) -> pd.DataFrame:
    """rows of (video_id, start, end, label)"""
    return pd.DataFrame(rows, columns=["video_id", "start", "end", "label"])


def pred_table(rows: list[tuple]) -> pd.DataFrame:
    """rows of (video_id, start, end, label, score)"""
    return pd.DataFrame(rows, columns=["video_id", "start", "end", "label", "score"])


def single_class_ap(gt_rows, pred_rows, thresholds) -> np.ndarray:
    result = average_precision(gt_table(gt_rows), pred_table(pred_rows), thresholds)
    assert result.ap.shape == (len(thresholds), 1)
    return result.ap[:, 0]


# ---------------------------------------------------------------------------------------------
# Hand-worked cases, one per rule


def test_perfect_predictions_score_one():
    gt = [("v1", 0, 10, 0), ("v1", 20, 30, 0), ("v2", 5, 8, 0)]
    preds = [(v, s, e, c, 0.9 - 0.1 * i) for i, (v, s, e, c) in enumerate(gt)]
    np.testing.assert_allclose(single_class_ap(gt, preds, HACS_TIOU_THRESHOLDS), 1.0, atol=0)


def test_duplicate_detection_is_a_false_positive():
    # p1 matches A; p2 duplicates p1 and finds A locked (B has tIoU 0) -> FP; p3 matches B.
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    gt = [("v", 0, 10, 0), ("v", 20, 30, 0)]
    preds = [("v", 0, 10, 0, 0.9), ("v", 0, 10, 0, 0.8), ("v", 20, 30, 0, 0.7)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.5]), [5 / 6], rtol=0, atol=1e-15)


def test_fallback_to_a_lower_tiou_free_segment():
    # A = [0, 10], B = [2, 12]. p1 = [0, 10] locks A (tIoU 1). p2 = [0, 10] finds A locked and falls
    # back to B with tIoU 8/12 = 0.667: a TP at 0.5, a FP at 0.7 (AP 1/2 * 1 = 1/2).
    gt = [("v", 0, 10, 0), ("v", 2, 12, 0)]
    preds = [("v", 0, 10, 0, 0.9), ("v", 0, 10, 0, 0.8)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.5, 0.7]), [1.0, 0.5], atol=1e-15)


def test_search_stops_at_first_free_segment_below_threshold():
    # A = [0, 10] (tIoU 1 with the predictions), B = [0, 4] (tIoU 0.4). p1 locks A; p2's next free
    # segment B is below 0.5 -> FP, at 0.3 it is a TP.
    gt = [("v", 0, 10, 0), ("v", 0, 4, 0)]
    preds = [("v", 0, 10, 0, 0.9), ("v", 0, 10, 0, 0.8)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.3, 0.5]), [1.0, 0.5], atol=1e-15)


def test_tiou_exactly_at_threshold_matches():
    # [0, 2] vs [0, 4]: tIoU 0.5 exactly; [1, 4] vs [0, 4]: 0.75 exactly (both are HACS thresholds).
    half = single_class_ap([("v", 0, 4, 0)], [("v", 0, 2, 0, 1.0)], HACS_TIOU_THRESHOLDS)
    np.testing.assert_array_equal(half, [1.0] + [0.0] * 9)
    three_quarters = single_class_ap([("v", 0, 4, 0)], [("v", 1, 4, 0, 1.0)], HACS_TIOU_THRESHOLDS)
    np.testing.assert_array_equal(three_quarters, [1.0] * 6 + [0.0] * 4)


def test_official_threshold_values_are_used_bit_for_bit():
    # np.linspace gives HACS "0.9" = 0.8999999999999999 and EK100 "0.3" = 0.30000000000000004, so
    # a tIoU of exactly 0.9 matches at "0.9" while one of exactly 0.3 misses at "0.3", as officially.
    at_09 = single_class_ap([("v", 0, 10, 0)], [("v", 0, 9, 0, 1.0)], HACS_TIOU_THRESHOLDS)
    np.testing.assert_array_equal(at_09, [1.0] * 9 + [0.0])
    at_03 = single_class_ap([("v", 0, 10, 0)], [("v", 0, 3, 0, 1.0)], EK100_TIOU_THRESHOLDS)
    np.testing.assert_array_equal(at_03, [1.0, 1.0, 0.0, 0.0, 0.0])


def test_prediction_in_a_video_without_ground_truth_is_a_false_positive():
    # p1 (other video) FP, p2 TP: precision 0, 1/2 at recall 0, 1 -> AP 1/2
    gt = [("v1", 0, 10, 0)]
    preds = [("v2", 0, 10, 0, 0.9), ("v1", 0, 10, 0, 0.8)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.5]), [0.5], atol=1e-15)
    # ... also when the video has ground truth of another class only
    gt2 = [("v1", 0, 10, 0), ("v2", 0, 10, 1)]
    result = average_precision(gt_table(gt2), pred_table(preds), [0.5])
    np.testing.assert_allclose(result.ap[:, 0], [0.5], atol=1e-15)


def test_class_without_predictions_scores_zero_and_counts():
    gt = [("v", 0, 10, 0), ("v", 20, 30, 1), ("v", 40, 50, 2)]
    preds = [("v", 0, 10, 0, 0.9), ("v", 20, 30, 1, 0.8)]
    result = average_precision(gt_table(gt), pred_table(preds), [0.5, 0.9])
    np.testing.assert_array_equal(result.class_labels, [0, 1, 2])
    np.testing.assert_array_equal(result.ap, [[1, 1, 0], [1, 1, 0]])
    np.testing.assert_allclose(result.mAP, [2 / 3, 2 / 3])
    assert result.average_mAP == pytest.approx(2 / 3, abs=1e-15)
    np.testing.assert_array_equal(result.num_predictions, [1, 1, 0])


def test_equal_scores_keep_input_order():
    # Same score: the FP comes first in the input, so it is ranked first -> AP 1/2; swapped -> 1.
    gt = [("v", 0, 10, 0)]
    fp, tp = ("v", 50, 60, 0, 0.5), ("v", 0, 10, 0, 0.5)
    np.testing.assert_allclose(single_class_ap(gt, [fp, tp], [0.5]), [0.5], atol=1e-15)
    np.testing.assert_allclose(single_class_ap(gt, [tp, fp], [0.5]), [1.0], atol=1e-15)


def test_equal_tiou_tries_the_later_ground_truth_first():
    # p1 = [2.5, 12.5] overlaps A = [0, 10] and B = [5, 15] equally (0.6) and locks B, the later row.
    # p2 = [5, 15] then finds B locked; A has tIoU 1/3: FP at 0.5, TP at 0.3.
    gt = [("v", 0, 10, 0), ("v", 5, 15, 0)]
    preds = [("v", 2.5, 12.5, 0, 0.9), ("v", 5, 15, 0, 0.8)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.3, 0.5]), [1.0, 0.5], atol=1e-15)


def test_locks_are_per_threshold():
    # A = [0, 10], B = [0, 6]. p1 = [0, 6] locks B at every threshold (tIoU 1 vs 0.6 with A).
    # p2 = [0, 10]: A is free at every threshold -> TP everywhere. Both TP -> AP 1 at 0.5 and 0.9;
    # at 0.9 p1 could never have used A (0.6), which a shared lock table would get wrong.
    gt = [("v", 0, 10, 0), ("v", 0, 6, 0)]
    preds = [("v", 0, 6, 0, 0.9), ("v", 0, 10, 0, 0.8)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.5, 0.9]), [1.0, 1.0], atol=1e-15)


def test_interpolation_takes_the_best_later_precision():
    # ranks: FP, TP, FP, TP with 2 ground truths: precision 0, 1/2, 1/3, 1/2; envelope 1/2 at both
    # recall steps -> AP = 1/2 * 1/2 + 1/2 * 1/2 = 1/2
    gt = [("v", 0, 10, 0), ("v", 20, 30, 0)]
    preds = [("v", 40, 50, 0, 0.9), ("v", 0, 10, 0, 0.8), ("v", 60, 70, 0, 0.7), ("v", 20, 30, 0, 0.6)]
    np.testing.assert_allclose(single_class_ap(gt, preds, [0.5]), [0.5], atol=1e-15)


def test_hacs_label_without_ground_truth_is_an_error_naming_it():
    gt = pd.DataFrame({"video_id": ["v"], "start": [0.0], "end": [10.0], "label": [0], "subset": ["validation"]})
    names = ["Archery", "Bowling"]  # Bowling is a class name but has no ground truth in the subset
    preds = pd.DataFrame({"video_id": ["v", "w"], "start": [0.0, 0.0], "end": [10.0, 5.0],
                          "score": [0.9, 0.8], "label_name": ["Archery", "Bowling"]})
    with pytest.raises(LabelError, match=r"'Bowling' \(video w\).*subset 'validation'"):
        evaluate_hacs(gt, names, preds)
    ok = evaluate_hacs(gt, names, preds.iloc[:1])
    assert ok.class_names == ["Archery"] and ok.average_mAP == 1.0


def test_hacs_subset_filter_and_wrong_subset():
    gt = pd.DataFrame({"video_id": ["v", "t"], "start": [0.0, 0.0], "end": [10.0, 10.0], "label": [0, 1],
                       "subset": ["validation", "training"]})
    preds = pd.DataFrame({"video_id": ["v"], "start": [0.0], "end": [10.0], "score": [1.0], "label_name": ["a"]})
    result = evaluate_hacs(gt, ["a", "b"], preds)
    assert list(result.class_names) == ["a"] and result.average_mAP == 1.0
    with pytest.raises(ValueError, match="subset 'testing'"):
        evaluate_hacs(gt, ["a", "b"], preds, subset="testing")


def ek_predictions(rows: list[tuple]) -> pd.DataFrame:
    """rows of (video_id, start, end, score, verb, noun, action_verb, action_noun)"""
    columns = ["video_id", "start", "end", "score", "verb", "noun", "action_verb", "action_noun"]
    return pd.DataFrame(rows, columns=columns)


def test_ek100_label_without_ground_truth_is_dropped():
    gt = pd.DataFrame({"video_id": ["v", "v"], "start": [0.0, 20.0], "end": [10.0, 30.0],
                       "verb": [3, 7], "noun": [1, 2]})
    perfect = ek_predictions([("v", 0, 10, 0.5, 3, 1, 3, 1), ("v", 20, 30, 0.4, 7, 2, 7, 2)])
    # Higher-scored predictions of labels without ground truth. Verb 1 is one the official code would
    # alias onto class index 1 (verb 7, since the sorted ground-truth verbs are [3, 7]); dropped here.
    extra = ek_predictions([("v", 20, 30, 0.9, 1, 0, 1, 0), ("v", 0, 10, 0.8, 0, 5, 0, 5)])
    results = evaluate_ek100(gt, pd.concat([extra, perfect], ignore_index=True), num_nouns=300)
    for task in ("verb", "noun", "action"):
        np.testing.assert_array_equal(results[task].ap, 1.0)
    np.testing.assert_array_equal(results["action"].class_labels, [3 * 300 + 1, 7 * 300 + 2])
    assert list(results["verb"].num_predictions) == [1, 1]


def test_ek100_action_label_comes_from_the_action_string():
    gt = pd.DataFrame({"video_id": ["v"], "start": [0.0], "end": [10.0], "verb": [3], "noun": [1]})
    # verb/noun fields say (3, 1) but the action string says "4,1": right verb and noun, wrong action
    preds = ek_predictions([("v", 0, 10, 0.5, 3, 1, 4, 1)])
    results = evaluate_ek100(gt, preds, num_nouns=300, verb_names=["v"] * 5, noun_names=["a", "b"])
    assert results["verb"].average_mAP == 1.0 and results["noun"].average_mAP == 1.0
    assert results["action"].average_mAP == 0.0
    assert results["action"].class_names == ["v b"]


def test_threshold_validation():
    with pytest.raises(ValueError, match="tiou_thresholds"):
        average_precision(gt_table([("v", 0, 1, 0)]), pred_table([]), [0.0])


# ---------------------------------------------------------------------------------------------
# Random cross-checks against the loop reference


def random_case(rng: np.random.Generator, coarse: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Segments on a half-second grid (coarse) so that equal tIoUs, tIoUs exactly at thresholds,
    identical and overlapping ground truth, and equal scores all occur often."""
    num_videos, num_classes = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    num_gt, num_pred = int(rng.integers(1, 25)), int(rng.integers(0, 80))

    def segments(count):
        if coarse:
            start = rng.integers(0, 16, count) * 0.5
            return start, start + rng.integers(1, 9, count) * 0.5
        start = rng.uniform(0, 20, count)
        return start, start + rng.uniform(0.1, 8, count)

    gt_start, gt_end = segments(num_gt)
    gt = pd.DataFrame({
        "video_id": [f"v{i}" for i in rng.integers(0, num_videos, num_gt)],
        "start": gt_start, "end": gt_end, "label": rng.integers(0, num_classes, num_gt) * 7,
    })
    pred_start, pred_end = segments(num_pred)
    # some predictions copy a ground truth segment (possibly in another video/class)
    copy = rng.random(num_pred) < 0.3
    source = rng.integers(0, num_gt, num_pred)
    pred_start[copy], pred_end[copy] = gt_start[source[copy]], gt_end[source[copy]]
    preds = pd.DataFrame({
        "video_id": [f"v{i}" for i in rng.integers(0, num_videos + 1, num_pred)],  # v{num_videos}: no GT
        "start": pred_start, "end": pred_end,
        "label": rng.choice(np.unique(gt["label"]), num_pred),
        "score": rng.integers(0, 5, num_pred) / 4.0 if coarse else rng.random(num_pred),
    })
    return gt, preds


@pytest.mark.parametrize("coarse", [True, False])
def test_random_cases_equal_the_loop_reference(coarse):
    rng = np.random.default_rng(1234 + coarse)
    thresholds = np.concatenate([HACS_TIOU_THRESHOLDS, EK100_TIOU_THRESHOLDS, [0.25, 1.0]])
    worst = 0.0
    for _ in range(150):
        gt, preds = random_case(rng, coarse)
        result = average_precision(gt, preds, thresholds)
        labels, expected = average_precision_table(gt, preds, thresholds)
        np.testing.assert_array_equal(result.class_labels, labels)
        assert result.ap.shape == expected.shape == (len(thresholds), len(labels))
        worst = max(worst, float(np.abs(result.ap - expected).max()))
    assert worst <= 1e-9


def test_batched_pair_building_gives_the_same_result(monkeypatch):
    rng = np.random.default_rng(7)
    gt, preds = random_case(rng, coarse=True)
    while len(preds) < 40:
        gt, preds = random_case(rng, coarse=True)
    whole = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
    monkeypatch.setattr(detection, "_PREDICTIONS_PER_BATCH", 3)
    batched = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
    np.testing.assert_array_equal(batched, whole)


def test_all_same_group_pairs_and_overlap_search_give_the_same_result(monkeypatch):
    rng = np.random.default_rng(17)
    for _ in range(40):
        gt, preds = random_case(rng, coarse=True)
        monkeypatch.setattr(detection, "_ALL_PAIRS_PER_PREDICTION", 10**9)  # every same-group pair
        all_pairs = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
        monkeypatch.setattr(detection, "_ALL_PAIRS_PER_PREDICTION", 0)  # the overlap search
        searched = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
        monkeypatch.undo()
        np.testing.assert_array_equal(searched, all_pairs)


def test_ek100_tasks_equal_the_loop_reference():
    rng = np.random.default_rng(99)
    num_gt, num_pred, num_nouns = 60, 300, 6
    start = rng.integers(0, 40, num_gt) * 0.5
    gt = pd.DataFrame({"video_id": [f"v{i}" for i in rng.integers(0, 3, num_gt)], "start": start,
                       "end": start + rng.integers(1, 8, num_gt) * 0.5,
                       "verb": rng.integers(0, 4, num_gt), "noun": rng.integers(0, num_nouns, num_gt)})
    pick = rng.integers(0, num_gt, num_pred)
    jitter = rng.integers(-2, 3, (num_pred, 2)) * 0.5
    preds = ek_predictions(list(zip(
        gt["video_id"].to_numpy()[pick], gt["start"].to_numpy()[pick] + jitter[:, 0],
        gt["end"].to_numpy()[pick] + jitter[:, 1] + 1.0, rng.integers(0, 6, num_pred) / 5.0,
        rng.integers(0, 5, num_pred), rng.integers(0, num_nouns, num_pred),
        rng.integers(0, 5, num_pred), rng.integers(0, num_nouns, num_pred),
    )))
    results = evaluate_ek100(gt, preds, num_nouns=num_nouns)
    for workers in (2, 3):  # the tasks scored in worker processes (runstate.parts): the same, bit for bit
        in_parts = evaluate_ek100(gt, preds, num_nouns=num_nouns, workers=workers)
        assert list(in_parts) == list(results)
        for task, result in in_parts.items():
            np.testing.assert_array_equal(result.ap, results[task].ap)
            assert result.class_names == results[task].class_names
    for task, (gt_label, pred_label) in {
        "verb": (gt["verb"], preds["verb"]),
        "noun": (gt["noun"], preds["noun"]),
        "action": (gt["verb"] * num_nouns + gt["noun"], preds["action_verb"] * num_nouns + preds["action_noun"]),
    }.items():
        labels, expected = average_precision_table(
            gt.assign(label=gt_label), preds.assign(label=pred_label), EK100_TIOU_THRESHOLDS
        )
        np.testing.assert_array_equal(results[task].class_labels, labels)
        np.testing.assert_allclose(results[task].ap, expected, rtol=0, atol=1e-9)
        assert 0 < results[task].average_mAP < 1


def test_metrics_record_layout():
    result = average_precision(gt_table([("v", 0, 10, 0), ("v", 20, 30, 1)]),
                               pred_table([("v", 0, 10, 0, 1.0)]), EK100_TIOU_THRESHOLDS)
    result.class_names = ["open", "close"]
    metrics = result.to_metrics()
    assert metrics["tiou_thresholds"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert metrics["mAP"] == [0.5] * 5 and metrics["average_mAP"] == 0.5
    assert metrics["per_class"] == {"open": 1.0, "close": 0.0}


# ---------------------------------------------------------------------------------------------
# Bit for bit: the official arithmetic, and the code paths chosen by size


@pytest.mark.parametrize("coarse", [True, False])
def test_random_cases_equal_the_official_arithmetic_bit_for_bit(coarse):
    # Same true positives as the loop reference, and the AP summed as the official
    # interpolated_prec_rec sums it (np.sum over the recall steps): equal to the last bit.
    rng = np.random.default_rng(77 + coarse)
    thresholds = np.concatenate([HACS_TIOU_THRESHOLDS, EK100_TIOU_THRESHOLDS])
    for _ in range(120):
        gt, preds = random_case(rng, coarse)
        result = average_precision(gt, preds, thresholds)
        labels, expected = average_precision_table(gt, preds, thresholds, interpolate=official_interpolated_ap)
        np.testing.assert_array_equal(result.class_labels, labels)
        np.testing.assert_array_equal(result.ap, expected)


def test_many_true_positives_per_class_equal_the_official_arithmetic():
    # Long recall-step lists (np.sum switches to pairwise blocks past 8 and 128 terms).
    rng = np.random.default_rng(5)
    num_gt = 400
    start = rng.uniform(0, 1000, num_gt)
    gt = gt_table([(f"v{i % 7}", s, s + rng.uniform(1, 20), i % 2) for i, s in enumerate(start)])
    rows = []
    for row in gt.itertuples():
        for _ in range(3):
            jitter = rng.uniform(-2, 2, 2)
            rows.append((row.video_id, row.start + jitter[0], row.end + jitter[1], row.label,
                         float(rng.integers(0, 50)) / 50))
    preds = pred_table(rows)
    result = average_precision(gt, preds, HACS_TIOU_THRESHOLDS)
    _, expected = average_precision_table(gt, preds, HACS_TIOU_THRESHOLDS, interpolate=official_interpolated_ap)
    np.testing.assert_array_equal(result.ap, expected)
    assert np.all(result.ap[0] > 0.3)


def test_group_lookup_by_table_and_by_search_agree(monkeypatch):
    rng = np.random.default_rng(21)
    for _ in range(20):
        gt, preds = random_case(rng, coarse=True)
        table_ap = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
        monkeypatch.setattr(detection, "_GROUP_TABLE_LIMIT", 0)
        search_ap = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
        monkeypatch.undo()
        np.testing.assert_array_equal(search_ap, table_ap)


def test_hacs_label_names_are_encoded_as_a_plain_lookup_would():
    rng = np.random.default_rng(8)
    names = ["Archery", "Bowling", "Curling", "Diving", "Bowling"]  # a repeated name: the last index wins
    gt = pd.DataFrame({"video_id": [f"v{i}" for i in range(12)], "start": np.zeros(12),
                       "end": np.full(12, 10.0), "label": [0, 1, 2, 4] * 3, "subset": "validation"})
    pred_names = rng.choice(["Archery", "Curling", "Bowling"], 200)
    preds = pd.DataFrame({"video_id": [f"v{i}" for i in rng.integers(0, 12, 200)],
                          "start": rng.uniform(0, 5, 200), "end": rng.uniform(5, 12, 200),
                          "score": rng.integers(0, 4, 200) / 4, "label_name": pred_names})
    result = evaluate_hacs(gt, names, preds)
    index_of_name = {"Archery": 0, "Curling": 2, "Bowling": 4}
    plain = average_precision(gt, preds.assign(label=[index_of_name[name] for name in pred_names]),
                              HACS_TIOU_THRESHOLDS)
    np.testing.assert_array_equal(result.ap, plain.ap)
    assert result.class_names == ["Archery", "Bowling", "Curling", "Bowling"]
    missing = preds.assign(label_name=[None] + list(pred_names[1:]))
    with pytest.raises(LabelError, match=r"label 'nan' \(video v\d+\)"):  # pandas keeps None as NaN
        evaluate_hacs(gt, names, missing)


def test_negative_and_large_labels_score_as_small_ones():
    rng = np.random.default_rng(4)
    gt, preds = random_case(rng, coarse=True)
    while gt["label"].nunique() < 2:
        gt, preds = random_case(rng, coarse=True)
    expected = average_precision(gt, preds, HACS_TIOU_THRESHOLDS).ap
    for shift in (-1000, 2**40):  # below zero and beyond the lookup table: searched instead
        shifted = average_precision(gt.assign(label=gt["label"] + shift), preds.assign(label=preds["label"] + shift),
                                    HACS_TIOU_THRESHOLDS)
        np.testing.assert_array_equal(shifted.ap, expected)


def as_columns(gt: pd.DataFrame, preds: pd.DataFrame) -> tuple[SegmentColumns, SegmentColumns]:
    """The tables as the columns ``average_precision`` scores."""
    gt_video, pred_video = detection._video_codes(gt["video_id"], preds["video_id"])
    return (SegmentColumns(gt["label"].to_numpy(np.int64), gt_video, gt[["start", "end"]].to_numpy(np.float64)),
            SegmentColumns(preds["label"].to_numpy(np.int64), pred_video, preds[["start", "end"]].to_numpy(np.float64),
                           preds["score"].to_numpy(np.float64)))


def test_scoring_in_parts_gives_the_same_result_bit_for_bit():
    # Classes split over worker processes (runstate.parts): ties and all, the same AP, class order
    # and counts as in one process, for any number of parts (more than classes, too).
    rng = np.random.default_rng(2024)
    thresholds = np.concatenate([HACS_TIOU_THRESHOLDS, EK100_TIOU_THRESHOLDS])
    for trial in range(12):
        gt, preds = random_case(rng, coarse=trial % 2 == 0)
        if trial == 0:  # one class holds nearly every prediction: some parts get no class
            preds = preds.assign(label=np.where(rng.random(len(preds)) < 0.9, gt["label"].iloc[0], preds["label"]))
        ground_truth, predictions = as_columns(gt, preds)
        whole = average_precision_of_columns(ground_truth, predictions, thresholds, workers=1)
        for workers in (2, 3, 6):
            parts = average_precision_of_columns(ground_truth, predictions, thresholds, workers=workers)
            np.testing.assert_array_equal(parts.class_labels, whole.class_labels)
            np.testing.assert_array_equal(parts.ap, whole.ap)
            np.testing.assert_array_equal(parts.num_ground_truth, whole.num_ground_truth)
            np.testing.assert_array_equal(parts.num_predictions, whole.num_predictions)


def test_scoring_in_parts_still_names_a_label_without_ground_truth():
    gt = gt_table([("v0", 0.0, 1.0, 0), ("v0", 2.0, 3.0, 1)])
    preds = pred_table([("v0", 0.0, 1.0, 0, 0.9), ("v0", 0.0, 1.0, 5, 0.8)])
    with pytest.raises(LabelError, match="label 5"):
        average_precision_of_columns(*as_columns(gt, preds), HACS_TIOU_THRESHOLDS, workers=2)
