import numpy as np
import pytest

from proposals.targets import bmn_targets, boundary_targets, iou_map_target


def boundary_targets_by_loops(segments, steps, width_steps):
    """Reference: per step and per segment, overlap of anchor and boundary region over anchor length."""
    start = np.zeros(steps)
    end = np.zeros(steps)
    half = 0.5 * width_steps / steps
    for t in range(steps):
        start_anchor = ((t - 0.5) / steps, (t + 0.5) / steps)
        end_anchor = ((t + 0.5) / steps, (t + 1.5) / steps)
        for gt_start, gt_end in segments:
            for anchor, centre, out in ((start_anchor, gt_start, start), (end_anchor, gt_end, end)):
                overlap = max(0.0, min(anchor[1], centre + half) - max(anchor[0], centre - half))
                out[t] = max(out[t], overlap / (anchor[1] - anchor[0]))
    return start, end


def iou_map_by_loops(segments, steps):
    out = np.zeros((steps, steps))
    for d in range(steps):
        for s in range(steps - d):
            lo, hi = s / steps, (s + d + 1) / steps
            for gt_start, gt_end in segments:
                inter = max(0.0, min(hi, gt_end) - max(lo, gt_start))
                out[d, s] = max(out[d, s], inter / ((hi - lo) + (gt_end - gt_start) - inter))
    return out


def test_boundary_targets_hand_case():
    # T = 10, action over steps 2, 3, 4: starts at the left edge of step 2, ends at the right edge of step 4
    start, end = boundary_targets(np.array([[0.2, 0.5]]), 10)
    np.testing.assert_allclose(start, [0, 1, 1, 1, 0, 0, 0, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(end, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0], atol=1e-12)
    # a start between grid edges: region [0.8, 3.8] in steps; anchor of step 1 [0.5, 1.5] overlaps 0.7
    start, _ = boundary_targets(np.array([[0.23, 0.5]]), 10)
    np.testing.assert_allclose(start[:5], [0, 0.7, 1, 1, 0.3], atol=1e-12)


def test_boundary_targets_match_loop_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        segments = np.sort(rng.uniform(0, 1, size=(3, 2)), axis=1)
        expected = boundary_targets_by_loops(segments, 16, 3.0)
        for got, want in zip(boundary_targets(segments, 16), expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    expected = boundary_targets_by_loops(segments, 16, 1.5)
    for got, want in zip(boundary_targets(segments, 16, boundary_width_steps=1.5), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_iou_map_hand_case():
    iou = iou_map_target(np.array([[0.25, 0.75]]), 4)  # the action is steps 1 and 2
    assert iou[1, 1] == pytest.approx(1.0)  # steps 1..2
    assert iou[0, 1] == pytest.approx(0.5)  # step 1 alone
    assert iou[2, 0] == pytest.approx(2 / 3)  # steps 0..2
    assert iou[3, 0] == pytest.approx(0.5)  # the whole sequence
    assert iou[0, 3] == 0.0  # step 3: no overlap
    assert iou[3, 1] == 0.0  # invalid cell (runs past the end)
    # two actions: each cell takes the better one
    iou = iou_map_target(np.array([[0.0, 0.25], [0.25, 0.75]]), 4)
    assert iou[0, 0] == pytest.approx(1.0) and iou[1, 1] == pytest.approx(1.0)


def test_iou_map_matches_loop_reference_and_max_duration():
    rng = np.random.default_rng(1)
    segments = np.sort(rng.uniform(0, 1, size=(4, 2)), axis=1)
    expected = iou_map_by_loops(segments, 12)
    np.testing.assert_allclose(iou_map_target(segments, 12), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(iou_map_target(segments, 12, max_duration=5), expected[:5], rtol=0, atol=1e-12)


def test_targets_without_ground_truth_and_clipping():
    iou, start, end = bmn_targets(np.zeros((0, 2)), 6)
    assert iou.shape == (6, 6) and not iou.any() and not start.any() and not end.any()
    clipped = bmn_targets(np.array([[-0.5, 0.5]]), 6)
    inside = bmn_targets(np.array([[0.0, 0.5]]), 6)
    for a, b in zip(clipped, inside):
        np.testing.assert_array_equal(a, b)


def test_targets_reject_bad_segments():
    with pytest.raises(ValueError, match="start <= end"):
        iou_map_target(np.array([[0.5, 0.2]]), 4)
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        boundary_targets(np.array([0.1, 0.2, 0.3]), 4)
    with pytest.raises(ValueError, match="finite"):
        boundary_targets(np.array([[0.1, np.nan]]), 4)
