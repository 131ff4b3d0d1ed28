import numpy as np
import pytest

from proposals.bm_map import bm_valid_mask
from proposals.inputs import (
    clip_step_edges,
    crop_window,
    fuse_window_predictions,
    normalize_segments,
    rescale_to_fixed_length,
    rescaled_video_scores,
    seconds_to_steps,
    sliding_windows,
    steps_to_seconds,
    training_windows,
    uniform_step_edges,
    window_segments,
)

# ---------------------------------------------------------------- HACS rescaling


def rescale_by_dense_sampling(features, times, duration, num_steps, points_per_step=20000):
    """Reference: mean of np.interp (edge-clamped linear interpolation) at many midpoints of each step."""
    out = np.zeros((num_steps, features.shape[1]))
    width = duration / num_steps
    for t in range(num_steps):
        x = t * width + (np.arange(points_per_step) + 0.5) * width / points_per_step
        for c in range(features.shape[1]):
            out[t, c] = np.interp(x, times, features[:, c]).mean()
    return out


def test_rescale_hand_case():
    # f = 0 until 0.5 s, linear to 2 at 1.5 s, then 2: means over [0, 1] and [1, 2] are 0.25 and 1.75
    rescaled = rescale_to_fixed_length(np.array([[0.0], [2.0]]), np.array([0.5, 1.5]), 2.0, num_steps=2)
    np.testing.assert_allclose(rescaled[:, 0], [0.25, 1.75], rtol=1e-6)
    assert rescaled.dtype == np.float32


@pytest.mark.parametrize("num_clips, num_steps", [(7, 20), (300, 10), (50, 50), (1, 4)])
def test_rescale_matches_dense_reference(num_clips, num_steps):
    rng = np.random.default_rng(num_clips)
    duration = 30.0
    times = np.sort(rng.uniform(0.2, duration - 0.2, size=num_clips))
    times += np.arange(num_clips) * 1e-6  # strictly increasing
    features = rng.normal(size=(num_clips, 3))
    got = rescale_to_fixed_length(features, times, duration, num_steps)
    expected = rescale_by_dense_sampling(features, times, duration, num_steps)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # float32 output


def test_rescale_is_exact_for_linear_features_inside_the_clips():
    times = np.arange(10) + 0.5  # clips centred at 0.5 .. 9.5 s of a 10 s video
    features = np.stack([3.0 + 2.0 * times, -times], axis=1)
    rescaled = rescale_to_fixed_length(features, times, 10.0, num_steps=20)
    centres = (np.arange(20) + 0.5) * 0.5
    inside = (centres - 0.25 >= 0.5) & (centres + 0.25 <= 9.5)
    np.testing.assert_allclose(rescaled[inside, 0], 3.0 + 2.0 * centres[inside], rtol=1e-6)
    np.testing.assert_allclose(rescaled[inside, 1], -centres[inside], rtol=1e-6)


def test_rescale_rejects_bad_input():
    with pytest.raises(ValueError, match="strictly increasing"):
        rescale_to_fixed_length(np.zeros((3, 2)), np.array([0.0, 1.0, 1.0]), 2.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        rescale_to_fixed_length(np.zeros((3, 2)), np.array([0.0, 1.0]), 2.0)


def test_normalize_segments_and_rescaled_scores():
    np.testing.assert_allclose(normalize_segments([[5.0, 10.0], [15.0, 25.0]], 20.0), [[0.25, 0.5], [0.75, 1.0]])
    scores = rescaled_video_scores(np.zeros(4), np.zeros(4), np.zeros((2, 4, 4)), duration_sec=8.0)
    np.testing.assert_allclose(scores.step_edges_sec, [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(scores.valid, bm_valid_mask(4))


# ---------------------------------------------------------------- seconds <-> steps


def test_clip_step_edges_and_conversions():
    times = np.array([0.25, 0.75, 1.25, 1.75])
    edges = clip_step_edges(times, duration_sec=2.1)
    np.testing.assert_allclose(edges, [0.0, 0.5, 1.0, 1.5, 2.0])
    # every clip centre lies inside its own step
    assert ((edges[:-1] < times) & (times < edges[1:])).all()
    np.testing.assert_allclose(seconds_to_steps([0.0, 0.75, 2.0], edges), [0.0, 1.5, 4.0])
    np.testing.assert_allclose(steps_to_seconds([0.0, 1.5, 4.0], edges), [0.0, 0.75, 2.0])
    # clamped to the video
    np.testing.assert_allclose(clip_step_edges(np.array([0.1, 1.0]), 1.2), [0.0, 0.55, 1.2])
    np.testing.assert_allclose(uniform_step_edges(3.0, 3), [0, 1, 2, 3])


# ---------------------------------------------------------------- EK100 windows


def test_sliding_windows():
    assert sliding_windows(10, 4) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert sliding_windows(11, 4) == [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]  # last aligned to the end
    assert sliding_windows(3, 4) == [(0, 4)]  # padded
    assert sliding_windows(4, 4) == [(0, 4)]
    assert sliding_windows(9, 4, overlap=0.0) == [(0, 4), (4, 8), (5, 9)]
    assert sliding_windows(6, 4, overlap=0.75) == [(0, 4), (1, 5), (2, 6)]
    for num_steps in range(1, 40):
        windows = sliding_windows(num_steps, 8, overlap=0.5)
        covered = np.zeros(max(num_steps, 8), dtype=bool)
        for start, end in windows:
            covered[start:end] = True
        assert covered[:num_steps].all() and all(end - start == 8 for start, end in windows)
    with pytest.raises(ValueError, match="overlap"):
        sliding_windows(10, 4, overlap=1.0)


def test_training_windows_and_window_segments():
    windows = [(0, 4), (2, 6), (4, 8), (6, 10)]
    segments = np.array([[2.5, 3.5], [5.0, 9.0]])  # in step coordinates
    # (0, 4) and (2, 6) hold the first whole; (6, 10) does not hold [5, 9]; none holds it whole
    assert training_windows(windows, segments) == [0, 1]
    assert training_windows(windows, np.zeros((0, 2))) == []
    # window (4, 8): the second segment is cut at the window's end, the first is outside
    np.testing.assert_allclose(window_segments(segments, 4, 4), [[0.25, 1.0]])
    np.testing.assert_allclose(window_segments(segments, 2, 4), [[0.125, 0.375], [0.75, 1.0]])


def test_crop_window_pads_with_zeros():
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(crop_window(features, 2, 3), features[2:5])
    padded = crop_window(features, 4, 4)
    np.testing.assert_array_equal(padded[:2], features[4:])
    assert not padded[2:].any() and padded.dtype == np.float32


def fuse_by_loops(windows, start, end, maps, num_steps):
    """Reference: per absolute step / cell, the mean over the windows that hold it."""
    window_steps = start.shape[1]
    num_durations = maps.shape[2]
    boundary = [[[], []] for _ in range(num_steps)]
    cells = {}
    for w, (a, _) in enumerate(windows):
        for j in range(window_steps):
            if a + j >= num_steps:
                continue
            boundary[a + j][0].append(start[w, j])
            boundary[a + j][1].append(end[w, j])
            for d in range(num_durations):
                if j + d <= window_steps - 1 and a + j + d <= num_steps - 1:
                    cells.setdefault((d, a + j), []).append(maps[w, :, d, j])
    fused_start = np.array([np.mean(b[0]) for b in boundary])
    fused_end = np.array([np.mean(b[1]) for b in boundary])
    fused_map = np.zeros((2, num_durations, num_steps))
    valid = np.zeros((num_durations, num_steps), dtype=bool)
    for (d, s), values in cells.items():
        fused_map[:, d, s] = np.mean(values, axis=0)
        valid[d, s] = True
    return fused_start, fused_end, fused_map, valid


def test_fuse_window_predictions_hand_case():
    times = 0.5 + np.arange(7, dtype=np.float64)  # clips every second, centred at 0.5 .. 6.5 s
    windows = sliding_windows(7, 4)
    assert windows == [(0, 4), (2, 6), (3, 7)]
    values = np.array([1.0, 2.0, 4.0])  # one constant per window
    start = np.repeat(values[:, None], 4, axis=1)
    maps = np.broadcast_to(values[:, None, None, None], (3, 2, 4, 4)).copy()
    fused = fuse_window_predictions(windows, start, 10 * start, maps, times, duration_sec=7.0)
    np.testing.assert_allclose(fused.start, [1, 1, 1.5, 7 / 3, 3, 3, 4])
    np.testing.assert_allclose(fused.end, 10 * fused.start)
    # cell (d=1, s=2): steps 2..3, inside window 0 (local s=2) and window 1 (local s=0), not window 2
    assert fused.confidence_map[0, 1, 2] == pytest.approx(1.5)
    # duration 4 (d=3) only at each window's local start 0: absolute starts 0, 2, 3
    assert np.flatnonzero(fused.valid[3]).tolist() == [0, 2, 3]
    # window 2's local step 1 is absolute step 4: clip centre 4.5 s, step [4, 5] s
    np.testing.assert_allclose(fused.step_edges_sec, np.arange(8.0))
    assert fused.step_edges_sec[3 + 1] < times[3 + 1] < fused.step_edges_sec[3 + 2]


@pytest.mark.parametrize(
    "num_steps, window_steps, overlap, num_durations", [(23, 8, 0.5, 8), (5, 8, 0.5, 6), (30, 6, 0.75, 4)]
)
def test_fuse_window_predictions_matches_loops(num_steps, window_steps, overlap, num_durations):
    rng = np.random.default_rng(num_steps)
    times = np.cumsum(rng.uniform(0.1, 0.3, size=num_steps))
    windows = sliding_windows(num_steps, window_steps, overlap)
    start = rng.uniform(size=(len(windows), window_steps))
    end = rng.uniform(size=(len(windows), window_steps))
    maps = rng.uniform(size=(len(windows), 2, num_durations, window_steps))
    fused = fuse_window_predictions(windows, start, end, maps, times, duration_sec=times[-1] + 0.2)
    expected_start, expected_end, expected_map, expected_valid = fuse_by_loops(windows, start, end, maps, num_steps)
    np.testing.assert_allclose(fused.start, expected_start, rtol=1e-12)
    np.testing.assert_allclose(fused.end, expected_end, rtol=1e-12)
    np.testing.assert_array_equal(fused.valid, expected_valid)
    np.testing.assert_allclose(fused.confidence_map, expected_map, rtol=1e-12)


def test_fuse_rejects_mismatched_windows():
    with pytest.raises(ValueError, match="expected"):
        fuse_window_predictions([(0, 4)], np.zeros((2, 4)), np.zeros((2, 4)), np.zeros((2, 2, 4, 4)), np.arange(4.0), 4)
