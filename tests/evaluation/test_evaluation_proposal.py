"""Proposal AR@AN / AUC: hand-worked cases and random cross-checks against the loop reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation import proposal
from evaluation.proposal import PROPOSAL_TIOU_THRESHOLDS, average_recall
from evaluation.reference import average_recall_curve
from evaluation.tiou import overlapping_pairs, paired_tiou, pairwise_tiou


def segments_table(rows, with_score=False) -> pd.DataFrame:
    columns = ["video_id", "start", "end"] + (["score"] if with_score else [])
    return pd.DataFrame(rows, columns=columns)


def hundred_proposals(hit_rank: int, video: str = "v") -> pd.DataFrame:
    """100 proposals by descending score; only the one at ``hit_rank`` (0-based) covers [0, 10]."""
    rows = [(video, 50.0 + i, 51.0 + i, 1.0 - i / 1000) for i in range(100)]
    rows[hit_rank] = (video, 0.0, 10.0, rows[hit_rank][3])
    return segments_table(rows, with_score=True)


def test_tiou_hand_cases():
    a = np.array([[0.0, 10.0], [0.0, 10.0], [0.0, 4.0], [0.0, 1.0], [3.0, 3.0]])
    b = np.array([[0.0, 10.0], [5.0, 15.0], [0.0, 2.0], [2.0, 3.0], [3.0, 3.0]])
    np.testing.assert_array_equal(paired_tiou(a, b), [1.0, 5 / 15, 0.5, 0.0, 0.0])
    # (N, M) matrix agrees with the paired form
    matrix = pairwise_tiou(a, b)
    assert matrix.shape == (5, 5)
    for i in range(5):
        np.testing.assert_array_equal(matrix[i], paired_tiou(np.repeat(a[i : i + 1], 5, axis=0), b))


@pytest.mark.parametrize("seed", [0, 1])
def test_overlapping_pairs_hold_every_overlapping_same_group_pair(seed):
    rng = np.random.default_rng(seed)
    group_a, group_b = rng.integers(0, 5, 300), rng.integers(0, 5, 200)
    start_a, start_b = rng.integers(0, 60, 300) * 0.5, rng.integers(0, 60, 200) * 0.5
    segments_a = np.stack([start_a, start_a + rng.integers(0, 10, 300) * 0.5], axis=1)
    segments_b = np.stack([start_b, start_b + rng.integers(0, 30, 200) * 0.25], axis=1)
    index_a, index_b = overlapping_pairs(group_a, segments_a, group_b, segments_b, 5)
    found = set(zip(index_a.tolist(), index_b.tolist()))
    assert len(found) == len(index_a)  # no pair twice
    assert all(group_a[i] == group_b[j] for i, j in found)
    inter = np.minimum(segments_a[:, None, 1], segments_b[None, :, 1]) - np.maximum(
        segments_a[:, None, 0], segments_b[None, :, 0])  # (300, 200)
    needed = {(i, j) for i, j in zip(*np.nonzero((inter > 0) & (group_a[:, None] == group_b[None, :])))}
    assert needed <= found
    assert len(found) < 3 * len(needed) + 50  # a run around the overlaps, not whole groups
    assert np.all(np.diff(index_a) >= 0)


def test_recall_curve_hand_case():
    # One video, 100 proposals, ratio 1: the second-ranked proposal recalls the only segment. AR is
    # 0 at AN = 1 and 1 from AN = 2; AUC = (0.5 + 98) / 100.
    result = average_recall(segments_table([("v", 0.0, 10.0)]), hundred_proposals(hit_rank=1))
    np.testing.assert_allclose(result.average_num_proposals, np.arange(1, 101), rtol=1e-12)
    assert result.average_recall[0] == 0.0 and np.all(result.average_recall[1:] == 1.0)
    assert result.auc == pytest.approx(0.985, abs=1e-12)
    assert result.to_metrics() == {"AR@1": 0.0, "AR@5": 1.0, "AR@10": 1.0, "AR@100": 1.0,
                                   "AUC": pytest.approx(0.985, abs=1e-12)}


def test_official_truncation_of_the_proposal_count_is_reproduced():
    # int(100 * 0.29) == 28 in float arithmetic, so at the 29th point only 28 proposals are used: a
    # segment first hit by the 29th proposal (rank 28) is recalled from the 30th point on.
    result = average_recall(segments_table([("v", 0.0, 10.0)]), hundred_proposals(hit_rank=28))
    assert result.average_recall[28] == 0.0
    assert result.average_recall[29] == 1.0
    assert np.all(result.average_recall[:29] == 0.0) and np.all(result.average_recall[29:] == 1.0)


def test_recall_per_threshold_and_one_proposal_for_two_segments():
    # Two segments recalled by one proposal [0, 10]: A = [0, 10] (tIoU 1), B = [0, 8] (tIoU 0.8).
    gt = segments_table([("v", 0.0, 10.0), ("v", 0.0, 8.0)])
    proposals = segments_table([("v", 0.0, 10.0, 1.0)], with_score=True)
    result = average_recall(gt, proposals, max_avg_proposals=1)
    expected = np.where(PROPOSAL_TIOU_THRESHOLDS <= 0.8, 1.0, 0.5)
    np.testing.assert_array_equal(result.recall[:, -1], expected)


def test_proposals_of_other_videos_count_in_the_ratio():
    # As officially: P counts every proposal in the file. 100 proposals in the ground-truth video and
    # 100 in another video -> ratio 0.5, the ground-truth video keeps its best 50.
    proposals = pd.concat([hundred_proposals(hit_rank=60), hundred_proposals(hit_rank=0, video="other")])
    result = average_recall(segments_table([("v", 0.0, 10.0)]), proposals)
    assert np.all(result.average_recall == 0.0)  # rank 60 is beyond the 50 kept
    # the AN axis stays the nominal 1..100 (the official code rescales it by the kept total)
    np.testing.assert_allclose(result.average_num_proposals, np.arange(1, 101), rtol=1e-12)
    recalled = average_recall(segments_table([("v", 0.0, 10.0)]),
                              pd.concat([hundred_proposals(hit_rank=49), hundred_proposals(0, "other")]))
    assert recalled.average_recall[-1] == 1.0  # rank 49 is the last of the 50 kept


def test_errors():
    with pytest.raises(ValueError, match="no proposal"):
        average_recall(segments_table([("v", 0.0, 1.0)]), segments_table([], with_score=True))
    with pytest.raises(ValueError, match="no proposal kept"):
        average_recall(segments_table([("v", 0.0, 1.0)]), segments_table([("w", 0.0, 1.0, 1.0)], True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_equal_the_loop_reference(seed):
    rng = np.random.default_rng(seed)
    num_videos = 6
    num_gt, num_props = 30, int(rng.integers(60, 250))
    gt_start = rng.integers(0, 40, num_gt) * 0.5
    gt = segments_table(list(zip([f"v{i}" for i in rng.integers(0, num_videos, num_gt)], gt_start,
                                 gt_start + rng.integers(1, 12, num_gt) * 0.5)))
    prop_start = rng.integers(0, 40, num_props) * 0.5
    proposals = segments_table(list(zip(
        [f"v{i}" for i in rng.integers(0, num_videos + 1, num_props)],  # v6 has no ground truth
        prop_start, prop_start + rng.integers(1, 12, num_props) * 0.5, rng.integers(0, 10, num_props) / 10,
    )), with_score=True)
    for max_avg in (100, 7, 3.5):
        result = average_recall(gt, proposals, max_avg_proposals=max_avg)
        recall, num_proposals = average_recall_curve(gt, proposals, PROPOSAL_TIOU_THRESHOLDS, max_avg)
        np.testing.assert_allclose(result.recall, recall, rtol=0, atol=1e-12)
        np.testing.assert_allclose(result.average_num_proposals, num_proposals, rtol=1e-12)
        assert 0 < result.auc < 1
        for workers in (2, 4, 9):  # videos split over worker processes (runstate.parts), more than videos too
            in_parts = average_recall(gt, proposals, max_avg_proposals=max_avg, workers=workers)
            np.testing.assert_array_equal(in_parts.recall, result.recall)
            np.testing.assert_array_equal(in_parts.average_num_proposals, result.average_num_proposals)


@pytest.mark.parametrize("seed", [0, 1])
def test_all_pairs_and_overlap_search_give_the_same_curve(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    gt_start = rng.integers(0, 40, 30) * 0.5
    gt = segments_table(list(zip([f"v{i}" for i in rng.integers(0, 6, 30)], gt_start,
                                 gt_start + rng.integers(1, 12, 30) * 0.5)))
    prop_start = rng.integers(0, 40, 200) * 0.5
    proposals = segments_table(list(zip([f"v{i}" for i in rng.integers(0, 7, 200)], prop_start,
                                        prop_start + rng.integers(1, 12, 200) * 0.5,
                                        rng.integers(0, 10, 200) / 10)), with_score=True)
    curves = []
    for per_proposal in (10**9, 0):  # every same-video pair; the overlap search
        monkeypatch.setattr(proposal, "_ALL_PAIRS_PER_PROPOSAL", per_proposal)
        result = average_recall(gt, proposals)
        curves.append((result.recall, result.average_num_proposals))
    np.testing.assert_array_equal(curves[0][0], curves[1][0])
    np.testing.assert_array_equal(curves[0][1], curves[1][1])


def test_thresholds_in_any_order_equal_the_loop_reference():
    rng = np.random.default_rng(9)
    gt_start = rng.integers(0, 40, 25) * 0.5
    gt = segments_table(list(zip([f"v{i}" for i in rng.integers(0, 4, 25)], gt_start,
                                 gt_start + rng.integers(1, 12, 25) * 0.5)))
    prop_start = rng.integers(0, 40, 150) * 0.5
    proposals = segments_table(list(zip([f"v{i}" for i in rng.integers(0, 4, 150)], prop_start,
                                        prop_start + rng.integers(1, 12, 150) * 0.5,
                                        rng.integers(0, 5, 150) / 4)), with_score=True)
    thresholds = [0.9, 0.3, 0.5, 0.5, 1.0, 0.7]  # unsorted, one repeated
    result = average_recall(gt, proposals, thresholds, max_avg_proposals=5)
    recall, _ = average_recall_curve(gt, proposals, thresholds, 5)
    np.testing.assert_array_equal(result.recall, recall)
    assert result.recall[1, -1] > result.recall[0, -1]  # 0.3 recalls more than 0.9
