"""Clip sampling on the target timeline: counts and times worked by hand, and decode-once chunking."""

import numpy as np
import pytest

from features.windows import chunks, clip_frame_times, clip_grid, num_target_frames


def reference_clip_frames(duration_sec, fps, num_frames, interval, stride):
    """Plain-loop reference: list of clips, each a list of target frame indices (padded)."""
    total = 1
    while total / fps < duration_sec - 1e-9:  # count frames j with j / fps < duration
        total += 1
    last = total - 1
    clips = []
    start = 0
    while start <= last:
        clips.append([min(start + i * interval, last) for i in range(num_frames)])
        start += stride
    return clips


# ---------------------------------------------------------------- hand-worked cases


def test_hacs_10s_by_hand():
    # HACS: 30 fps, 8 frames interval 8, stride 16. 10 s -> target frames 0..299.
    grid = clip_grid(10.0, 30, 8, 8, 16)
    assert grid.num_target_frames == 300
    # Starts 0, 16, ..., 288 (288 <= 299 < 304): 19 clips.
    assert grid.num_clips == 19
    # Used frames: multiples of 8 up to 296 (38 of them) plus the clamped last frame 299.
    expected_ids = np.array(list(range(0, 297, 8)) + [299])
    np.testing.assert_array_equal(grid.frame_ids, expected_ids)
    np.testing.assert_allclose(grid.frame_times_sec, expected_ids / 30.0, rtol=0, atol=1e-12)
    # Centre of clip k: (16k + 28) / 30 s; clip 0 at 0.9333 s, clip 18 at 316/30 = 10.5333 s.
    np.testing.assert_allclose(grid.clip_centers_sec, (16 * np.arange(19) + 28) / 30.0, rtol=0, atol=1e-12)
    assert grid.clip_centers_sec[0] == pytest.approx(28 / 30)
    # Clip 0: frames 0, 8, ..., 56; clip 18 starts at 288: frames 288, 296, then 299 six times.
    clip_frames = grid.frame_ids[grid.clip_frame_ids]
    np.testing.assert_array_equal(clip_frames[0], [0, 8, 16, 24, 32, 40, 48, 56])
    np.testing.assert_array_equal(clip_frames[18], [288, 296, 299, 299, 299, 299, 299, 299])
    # Clip 3 starts at 48: no padding.
    np.testing.assert_array_equal(clip_frames[3], [48, 56, 64, 72, 80, 88, 96, 104])
    # Clip 15 starts at 240 and ends at 240 + 56 = 296: no padding; clip 16 (start 256) pads two frames.
    np.testing.assert_array_equal(clip_frames[15], [240, 248, 256, 264, 272, 280, 288, 296])
    np.testing.assert_array_equal(clip_frames[16], [256, 264, 272, 280, 288, 296, 299, 299])


def test_ek100_10s_by_hand():
    # EK100: 60 fps, 8 frames interval 8, stride 8. 10 s -> target frames 0..599.
    grid = clip_grid(10.0, 60, 8, 8, 8)
    assert grid.num_target_frames == 600
    assert grid.num_clips == 75  # starts 0, 8, ..., 592
    np.testing.assert_array_equal(grid.frame_ids, list(range(0, 593, 8)) + [599])
    assert grid.frame_ids.shape == (76,)
    np.testing.assert_allclose(grid.clip_centers_sec, (8 * np.arange(75) + 28) / 60.0, rtol=0, atol=1e-12)
    # Consecutive clips share 7 of 8 frames: clip k uses unique frames k .. k+7 (clamped to 75).
    np.testing.assert_array_equal(grid.clip_frame_ids[0], np.arange(8))
    np.testing.assert_array_equal(grid.clip_frame_ids[10], np.arange(10, 18))
    np.testing.assert_array_equal(grid.clip_frame_ids[74], [74, 75, 75, 75, 75, 75, 75, 75])
    # Spacing of clip centres: stride / fps = 0.1333 s.
    np.testing.assert_allclose(np.diff(grid.clip_centers_sec), 8 / 60, rtol=0, atol=1e-12)


def test_video_shorter_than_one_clip():
    # 1.0 s at 30 fps = frames 0..29, shorter than one clip span (57 frames); starts 0 and 16 are frames.
    grid = clip_grid(1.0, 30, 8, 8, 16)
    assert grid.num_clips == 2
    clip_frames = grid.frame_ids[grid.clip_frame_ids]
    np.testing.assert_array_equal(clip_frames[0], [0, 8, 16, 24, 29, 29, 29, 29])
    np.testing.assert_array_equal(clip_frames[1], [16, 24, 29, 29, 29, 29, 29, 29])
    np.testing.assert_array_equal(grid.frame_ids, [0, 8, 16, 24, 29])
    # 0.5 s = frames 0..14: one clip only.
    grid = clip_grid(0.5, 30, 8, 8, 16)
    assert grid.num_clips == 1
    np.testing.assert_array_equal(grid.frame_ids[grid.clip_frame_ids[0]], [0, 8, 14, 14, 14, 14, 14, 14])
    assert grid.clip_centers_sec[0] == pytest.approx(28 / 30)


@pytest.mark.parametrize("duration", [0.0, 1 / 30, 0.02])
def test_one_frame_video(duration):
    grid = clip_grid(duration, 30, 8, 8, 16)
    assert grid.num_target_frames == 1
    assert grid.num_clips == 1
    np.testing.assert_array_equal(grid.frame_ids, [0])
    np.testing.assert_array_equal(grid.frame_times_sec, [0.0])
    np.testing.assert_array_equal(grid.clip_frame_ids, np.zeros((1, 8)))
    assert grid.clip_centers_sec[0] == pytest.approx(28 / 30)


def test_frame_count_float_noise():
    # 10 s at 30 fps must be 300 frames even when the product is computed with noise.
    assert num_target_frames(10.0, 30.0) == 300
    assert num_target_frames(0.1 * 3, 10) == 3  # 0.30000000000000004 * 10
    assert num_target_frames(10.001, 30) == 301  # frame 300 at 10.0 s < 10.001 s
    # A 29.97 fps video of 300 frames lasts 10.01 s: on the 30 fps timeline that is 301 frames.
    assert num_target_frames(300 / 29.97, 30) == 301


def test_one_hour_ek100_counts():
    grid = clip_grid(3600.0, 60, 8, 8, 8)
    assert grid.num_target_frames == 216000
    assert grid.num_clips == 27000  # 215999 // 8 + 1
    assert grid.frame_ids.shape == (27001,)  # multiples of 8 up to 215992, plus 215999


def test_clip_frame_times_helper():
    times, centers = clip_frame_times(2.0, 30, 4, 2, 3)
    grid = clip_grid(2.0, 30, 4, 2, 3)
    np.testing.assert_array_equal(times, grid.frame_times_sec[grid.clip_frame_ids])
    np.testing.assert_array_equal(centers, grid.clip_centers_sec)
    np.testing.assert_allclose(times[1], np.array([3, 5, 7, 9]) / 30)


@pytest.mark.parametrize(
    "duration, fps, num_frames, interval, stride",
    [
        (10.0, 30, 8, 8, 16),
        (10.0, 60, 8, 8, 8),
        (3.3, 25, 4, 3, 5),
        (7.77, 24, 8, 8, 3),
        (0.04, 30, 8, 8, 16),
        (12.0, 30, 1, 1, 1),
        (5.0, 15, 16, 2, 40),
    ],
)
def test_grid_matches_plain_reference(duration, fps, num_frames, interval, stride):
    grid = clip_grid(duration, fps, num_frames, interval, stride)
    expected = np.array(reference_clip_frames(duration, fps, num_frames, interval, stride))
    np.testing.assert_array_equal(grid.frame_ids[grid.clip_frame_ids], expected)
    np.testing.assert_array_equal(grid.frame_ids, np.unique(expected))
    starts = expected[:, 0]
    np.testing.assert_allclose(grid.clip_centers_sec, (starts + (num_frames - 1) * interval / 2) / fps,
                               rtol=0, atol=1e-12)
    assert grid.clip_frame_ids.dtype == np.int64 and grid.frame_times_sec.dtype == np.float64


@pytest.mark.parametrize("kwargs, message", [
    (dict(duration_sec=-1.0), "duration_sec"),
    (dict(duration_sec=float("nan")), "duration_sec"),
    (dict(fps=0), "fps"),
    (dict(num_frames=0), "num_frames"),
    (dict(interval_frames=2.5), "interval_frames"),
    (dict(stride_frames=True), "stride_frames"),
])
def test_bad_arguments(kwargs, message):
    args = dict(duration_sec=1.0, fps=30, num_frames=8, interval_frames=8, stride_frames=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        clip_grid(**args)


# ---------------------------------------------------------------- chunking


def replay_chunks(grid, clips_per_chunk):
    """Run the decode loop the way extraction does, with frame 'pixels' = global position."""
    buffer = np.zeros(0, dtype=np.int64)
    decoded = []
    clips = []
    max_buffer = 0
    for chunk in chunks(grid, clips_per_chunk):
        decoded.append(chunk.decode_frame_ids)
        np.testing.assert_array_equal(chunk.decode_times_sec, grid.frame_times_sec[chunk.decode_frame_ids])
        fresh = chunk.decode_frame_ids  # the "decoder" returns the frames it was asked for
        buffer = np.concatenate([buffer[chunk.keep_from_previous], fresh])
        np.testing.assert_array_equal(buffer, chunk.buffer_frame_ids)
        clips.append(buffer[chunk.clip_frame_ids])  # (n, num_frames)
        max_buffer = max(max_buffer, buffer.shape[0])
    return np.concatenate(decoded), np.concatenate(clips), max_buffer


@pytest.mark.parametrize(
    "duration, fps, num_frames, interval, stride",
    [
        (10.0, 30, 8, 8, 16),
        (10.0, 60, 8, 8, 8),
        (7.77, 24, 8, 8, 3),  # unusual stride: frames needed again after a gap
        (0.02, 30, 8, 8, 16),
        (5.0, 15, 16, 2, 40),  # stride larger than the clip span: unused frames skipped
    ],
)
@pytest.mark.parametrize("clips_per_chunk", [1, 2, 7, 1000])
def test_chunked_reconstruction_equals_grid(duration, fps, num_frames, interval, stride, clips_per_chunk):
    grid = clip_grid(duration, fps, num_frames, interval, stride)
    decoded, clips, _ = replay_chunks(grid, clips_per_chunk)
    # Each needed frame decoded exactly once, in time order.
    np.testing.assert_array_equal(decoded, np.arange(grid.frame_ids.shape[0]))
    np.testing.assert_array_equal(clips, grid.clip_frame_ids)


def test_chunks_hand_worked_ek100():
    # EK100 10 s, 4 clips per chunk: chunk 0 = clips 0..3 needs unique frames 0..10 (clip 3 uses 3..10).
    grid = clip_grid(10.0, 60, 8, 8, 8)
    chunk_list = list(chunks(grid, 4))
    assert len(chunk_list) == 19  # ceil(75 / 4)
    first, second = chunk_list[0], chunk_list[1]
    np.testing.assert_array_equal(first.decode_frame_ids, np.arange(11))
    assert first.keep_from_previous.size == 0
    # Chunk 1 = clips 4..7 uses frames 4..14: keeps 4..10 (positions 4..10 of the old buffer), decodes 11..14.
    np.testing.assert_array_equal(second.keep_from_previous, np.arange(4, 11))
    np.testing.assert_array_equal(second.decode_frame_ids, np.arange(11, 15))
    np.testing.assert_allclose(second.decode_times_sec, np.arange(11, 15) * 8 / 60)
    np.testing.assert_array_equal(second.clip_frame_ids[0], np.arange(8))  # clip 4 -> buffer 0..7
    last = chunk_list[-1]
    assert (last.clip_start, last.clip_stop) == (72, 75)


def test_chunk_memory_bounded_for_one_hour_video():
    # One hour of EK100: 27000 clips. With 64 clips per chunk, the buffer never exceeds 64 + 7 frames.
    grid = clip_grid(3600.0, 60, 8, 8, 8)
    decoded, clips, max_buffer = replay_chunks(grid, 64)
    assert max_buffer == 64 + 7
    np.testing.assert_array_equal(decoded, np.arange(grid.frame_ids.shape[0]))
    np.testing.assert_array_equal(clips, grid.clip_frame_ids)
    # HACS setting (stride 16): clips of a chunk of 64 span 2 * 63 + 8 unique frames.
    grid = clip_grid(3600.0, 30, 8, 8, 16)
    _, _, max_buffer = replay_chunks(grid, 64)
    assert max_buffer == 2 * 63 + 8


def test_chunks_bad_size():
    grid = clip_grid(1.0, 30, 8, 8, 16)
    with pytest.raises(ValueError, match="clips_per_chunk"):
        list(chunks(grid, 0))
