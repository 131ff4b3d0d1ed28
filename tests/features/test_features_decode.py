"""Decoding clip batches: every clip equals a direct decode at its frame times, each frame decoded once."""

from __future__ import annotations

import numpy as np
import pytest

from data.video import VideoReader
from features.decode import ClipBatch, ClipBatchDataset, ClipSampling, VideoFailure
from features.sources import VideoSource
from features.windows import clip_grid


@pytest.mark.parametrize("sampling, clips_per_chunk, batch_size", [
    # 60 fps on 15 fps videos: four target frames per native frame, shared across chunk boundaries.
    (ClipSampling(fps=60.0, num_frames=3, interval_frames=1, stride_frames=1, short_side=32), 5, 2),
    # Sparse frames (stride > clip span), a centre crop, one chunk per batch.
    (ClipSampling(fps=30.0, num_frames=2, interval_frames=3, stride_frames=10, short_side=40, crop="center"),
     4, 4),
])
def test_batches_equal_direct_decoding_and_frames_are_decoded_once(tiny_videos, monkeypatch, sampling,
                                                                  clips_per_chunk, batch_size):
    path = tiny_videos["path"][0]
    requested = []
    real_frames = VideoReader.frames

    def frames(self, indices):
        requested.append(np.unique(indices))  # the reader decodes a repeated index once
        return real_frames(self, indices)

    monkeypatch.setattr(VideoReader, "frames", frames)
    dataset = ClipBatchDataset([VideoSource("v", path)], sampling, clips_per_chunk, batch_size)
    items = list(dataset)
    decoded = np.concatenate(requested)
    # Forward only, never twice: the decoder never seeks back.
    assert np.all(np.diff(decoded) > 0), decoded
    monkeypatch.setattr(VideoReader, "frames", real_frames)

    reader = VideoReader(path, short_side=sampling.short_side)
    grid = clip_grid(reader.duration, sampling.fps, sampling.num_frames, sampling.interval_frames,
                     sampling.stride_frames)
    assert set(decoded) == set(reader.frame_indices(grid.frame_times_sec))  # every needed frame, once
    assert all(isinstance(item, ClipBatch) for item in items)
    assert [item.clip_start for item in items] == [
        start + offset for start in range(0, grid.num_clips, clips_per_chunk)
        for offset in range(0, min(clips_per_chunk, grid.num_clips - start), batch_size)]
    assert [item.is_last for item in items] == [False] * (len(items) - 1) + [True]
    clips = np.concatenate([item.clips.numpy() for item in items])  # (N, T, H, W, 3)
    expected = reader.frames_at(grid.clip_frame_times_sec.reshape(-1))  # (N*T, H, W, 3)
    # (N*T, H, W, 3) -> (N, T, H, W, 3)
    expected = expected.reshape(grid.num_clips, sampling.num_frames, *expected.shape[1:])
    if sampling.crop == "center":
        top, left = (expected.shape[2] - 40) // 2, (expected.shape[3] - 40) // 2
        expected = expected[:, :, top:top + 40, left:left + 40]
    np.testing.assert_array_equal(clips, expected)
    np.testing.assert_array_equal(np.concatenate([item.times_sec for item in items]), grid.clip_centers_sec)
    assert {(item.num_clips, item.duration_sec, item.native_fps) for item in items} == {
        (grid.num_clips, reader.duration, reader.native_fps)}


def test_an_unexpected_error_becomes_the_video_failure(tiny_videos, monkeypatch):
    def broken(self, indices):
        raise MemoryError("cannot allocate frames")

    monkeypatch.setattr(VideoReader, "frames", broken)
    sampling = ClipSampling(fps=30.0, num_frames=2, interval_frames=2, stride_frames=8, short_side=32)
    sources = [VideoSource("a", tiny_videos["path"][0]), VideoSource("b", "")]
    items = list(ClipBatchDataset(sources, sampling, clips_per_chunk=8, batch_size=8))
    assert items == [VideoFailure(0, "a", tiny_videos["path"][0], "MemoryError: cannot allocate frames"),
                     VideoFailure(1, "b", "", "video file not found (no path for it in the dataset)")]
