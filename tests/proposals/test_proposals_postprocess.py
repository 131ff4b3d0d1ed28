import math

import numpy as np
import pytest

from formats.proposals import proposal_list
from proposals.bm_layer import bm_valid_mask
from proposals.postprocess import (
    VideoScores,
    candidate_boundaries,
    postprocess_video,
    postprocess_videos,
    score_proposals,
    soft_nms,
)


def soft_nms_by_loop(proposals, alpha, low, high, top_k, length_scale):
    """Reference: BMN's Soft-NMS as lists, one proposal at a time."""
    order = sorted(range(len(proposals)), key=lambda i: -proposals[i][2])
    start = [proposals[i][0] for i in order]
    end = [proposals[i][1] for i in order]
    score = [proposals[i][2] for i in order]
    kept = []
    while score and len(kept) < top_k:
        best = score.index(max(score))
        width = (end[best] - start[best]) / length_scale
        for i in range(len(score)):
            if i == best:
                continue
            inter = max(0.0, min(end[i], end[best]) - max(start[i], start[best]))
            iou = inter / ((end[i] - start[i]) + (end[best] - start[best]) - inter)
            if iou > low + (high - low) * width:
                score[i] *= math.exp(-(iou**2) / alpha)
        kept.append([start.pop(best), end.pop(best), score.pop(best)])
    return np.array(kept).reshape(-1, 3)


def random_proposals(rng, count, scale):
    starts = rng.integers(0, scale - 1, size=count)
    ends = starts + rng.integers(1, scale // 2, size=count)
    return np.stack([starts, ends, rng.uniform(0, 1, size=count)], axis=1).astype(np.float64)


@pytest.mark.parametrize(
    "alpha, low, high, top_k",
    [(0.4, 0.5, 0.9, 100), (0.4, 0.5, 0.9, 7), (0.75, 0.65, 0.9, 30), (0.2, 0.0, 0.0, 50)],
)
def test_soft_nms_matches_loop_reference(alpha, low, high, top_k):
    rng = np.random.default_rng(top_k)
    proposals = random_proposals(rng, 200, 40)
    got = soft_nms(proposals, alpha, low, high, top_k, length_scale=40.0)
    expected = soft_nms_by_loop(proposals.tolist(), alpha, low, high, top_k, 40.0)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_soft_nms_hand_case():
    proposals = np.array([[0.0, 10.0, 0.9], [1.0, 10.0, 0.8], [50.0, 60.0, 0.5], [0.0, 80.0, 0.4], [0.0, 60.0, 0.3]])
    kept = soft_nms(proposals, top_k=10, length_scale=100.0)
    # [1, 10] overlaps [0, 10] with tIoU 0.9 > 0.5 + 0.4 * 0.1: decayed by exp(-0.81 / 0.4)
    decayed = 0.8 * math.exp(-0.81 / 0.4)
    # [0, 60] overlaps [0, 80] with tIoU 0.75 < 0.5 + 0.4 * 0.8: kept as is
    expected = [[0, 10, 0.9], [50, 60, 0.5], [0, 80, 0.4], [0, 60, 0.3], [1, 10, decayed]]
    np.testing.assert_allclose(kept, expected, rtol=1e-12)
    assert soft_nms(np.zeros((0, 3))).shape == (0, 3)


def test_candidate_boundaries():
    probabilities = np.array([0.1, 0.3, 0.2, 0.05, 0.9, 0.6, 0.1, 0.2])
    # peaks: 1 (0.3), 4 (0.9); above 0.45: 4, 5; the ends are not peaks and are below 0.45
    assert np.flatnonzero(candidate_boundaries(probabilities)).tolist() == [1, 4, 5]


def score_proposals_by_loops(start, end, confidence_map, valid):
    start_candidate = candidate_boundaries(start)
    end_candidate = candidate_boundaries(end)
    start_candidate[0] = end_candidate[-1] = True
    rows = []
    num_durations, steps = valid.shape
    for d in range(num_durations):
        for s in range(steps):
            if valid[d, s] and start_candidate[s] and end_candidate[s + d]:
                score = start[s] * end[s + d] * confidence_map[0, d, s] * confidence_map[1, d, s]
                rows.append([s, s + d + 1, score])
    return np.array(rows).reshape(-1, 3)


def test_score_proposals_matches_loops():
    rng = np.random.default_rng(0)
    steps = 20
    scores = VideoScores(
        start=rng.uniform(size=steps),
        end=rng.uniform(size=steps),
        confidence_map=rng.uniform(size=(2, 8, steps)),
        valid=bm_valid_mask(steps, 8),
        step_edges_sec=np.linspace(0, 10, steps + 1),
    )
    got = score_proposals(scores)
    expected = score_proposals_by_loops(scores.start, scores.end, scores.confidence_map, scores.valid)
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert len(got) > 10


def test_postprocess_video_finds_the_action_in_seconds():
    steps = 10
    start = np.full(steps, 0.05)
    end = np.full(steps, 0.05)
    start[3], end[6] = 0.9, 0.8  # action over steps 3..6
    confidence_map = np.full((2, steps, steps), 0.1)
    confidence_map[:, 3, 3] = 0.95  # cell (d=3, s=3)
    scores = VideoScores(start, end, confidence_map, bm_valid_mask(steps), np.linspace(0.0, 20.0, steps + 1))
    proposals = postprocess_video(scores, temporal_scale=steps, top_k=5)
    # candidates: starts 0 (always) and 3, ends 6 and 9 (always) -> 4 proposals, none decayed
    # (their tIoUs with the best, 4/7, 4/10, 4/7 steps, are below 0.5 + 0.4 * 0.4)
    low = 0.1 * 0.1
    expected = [
        [6.0, 14.0, 0.9 * 0.8 * 0.95 * 0.95],
        [6.0, 20.0, 0.9 * 0.8 * low * 0.05 / 0.8],
        [0.0, 14.0, 0.05 * 0.8 * low],
        [0.0, 20.0, 0.05 * 0.05 * low],
    ]
    np.testing.assert_allclose(proposals, expected, rtol=1e-12)
    entries = proposal_list(proposals[:1])
    assert entries == [{"segment": [6.0, 14.0], "score": pytest.approx(0.9 * 0.8 * 0.95 * 0.95)}]


def test_postprocess_videos_parallel_equals_sequential():
    rng = np.random.default_rng(2)
    steps = 16
    videos = {
        f"video_{i}": VideoScores(
            rng.uniform(size=steps),
            rng.uniform(size=steps),
            rng.uniform(size=(2, steps, steps)),
            bm_valid_mask(steps),
            np.linspace(0.0, 5.0 + i, steps + 1),
        )
        for i in range(4)
    }
    parallel = postprocess_videos(videos, steps, top_k=20, n_jobs=2)
    assert list(parallel) == list(videos)
    for video_id, scores in videos.items():
        np.testing.assert_array_equal(parallel[video_id], postprocess_video(scores, steps, top_k=20))
