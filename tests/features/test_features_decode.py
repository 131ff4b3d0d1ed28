"""Decoding clip batches: every clip equals a direct decode at its frame times, each frame decoded once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from data.video import VideoReader
from features.decode import (
    ClipBatch,
    ClipBatchDataset,
    ClipSampling,
    ClipSlots,
    VideoFailure,
    _gather_transposed,
    keep_item,
)
from features.extract import run_extract
from features.sources import VideoSource, list_sources
from features.windows import clip_grid
from formats.features import FeatureStore

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLING = ClipSampling(fps=30.0, num_frames=4, interval_frames=4, stride_frames=8, short_side=32)


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


def test_channels_last_batches_hold_the_same_clips_in_the_model_layout(tiny_videos):
    """``channels_last``: contiguous (n, T, H, W, 3) clips, whose (n, 3, T, H, W) view is channels-last;
    by default (n, 3, T, H, W) contiguous memory viewed as (n, T, H, W, 3). Same values either way."""
    sources = [VideoSource("v", tiny_videos["path"][0])]
    contiguous = list(ClipBatchDataset(sources, SAMPLING, clips_per_chunk=5, batch_size=3))
    channels_last = list(ClipBatchDataset(sources, SAMPLING, clips_per_chunk=5, batch_size=3, channels_last=True))
    assert len(contiguous) == len(channels_last) > 1
    for plain, last in zip(contiguous, channels_last):
        np.testing.assert_array_equal(plain.clips.numpy(), last.clips.numpy())
        assert last.clips.is_contiguous()
        assert last.clips.permute(0, 4, 1, 2, 3).is_contiguous(memory_format=torch.channels_last_3d)
        assert plain.clips.permute(0, 4, 1, 2, 3).is_contiguous()


def test_the_contiguous_layout_gathers_each_frame_transposed():
    """``_gather_transposed`` against the plain gather-then-transpose, with clips sharing frames."""
    frames = np.random.default_rng(0).integers(0, 256, (7, 5, 6, 3), dtype=np.uint8)  # (K, H, W, 3)
    clip_frame_ids = np.array([[0, 2, 4], [2, 4, 6], [6, 6, 1]])  # (n, T), overlapping and repeated
    out = np.empty((3, 3, 3, 5, 6), dtype=np.uint8)  # (n, 3, T, H, W)
    _gather_transposed(frames, clip_frame_ids, out)
    np.testing.assert_array_equal(out, frames[clip_frame_ids].transpose(0, 4, 1, 2, 3))


def test_an_unexpected_error_becomes_the_video_failure(tiny_videos, monkeypatch):
    def broken(self, indices):
        raise MemoryError("cannot allocate frames")

    monkeypatch.setattr(VideoReader, "frames", broken)
    sampling = ClipSampling(fps=30.0, num_frames=2, interval_frames=2, stride_frames=8, short_side=32)
    sources = [VideoSource("a", tiny_videos["path"][0]), VideoSource("b", "")]
    items = list(ClipBatchDataset(sources, sampling, clips_per_chunk=8, batch_size=8))
    assert items == [VideoFailure(0, "a", tiny_videos["path"][0], "MemoryError: cannot allocate frames"),
                     VideoFailure(1, "b", "", "video file not found (no path for it in the dataset)")]



# ------------------------------------------------------------------ hand-over through shared slots


def slotted_loader(dataset, num_workers):
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=keep_item,
                                       prefetch_factor=4, multiprocessing_context="fork")


@pytest.mark.parametrize("channels_last", [False, True])
def test_workers_hand_batches_over_in_slots_with_the_same_clips_and_layout(tiny_videos, channels_last):
    sources = [VideoSource(str(i), path) for i, path in enumerate(tiny_videos["path"][:3])]
    expected = list(ClipBatchDataset(sources, SAMPLING, clips_per_chunk=5, batch_size=3, channels_last=channels_last))
    slots = ClipSlots.for_batches(2, 4, batch_size=3, sampling=SAMPLING)
    dataset = ClipBatchDataset(sources, SAMPLING, clips_per_chunk=5, batch_size=3, channels_last=channels_last,
                               slots=slots)
    got = []
    for item in slotted_loader(dataset, 2):
        assert item.clips is None and item.slot >= 0  # nothing but the slot's number crossed over
        received = slots.receive(item, channels_last)
        got.append(replace(received, clips=received.clips.clone()))
        plain = received.clips.permute(0, 4, 1, 2, 3)  # the model's (n, 3, T, H, W) view
        assert plain.is_contiguous(memory_format=torch.channels_last_3d) if channels_last else plain.is_contiguous()
        slots.release(item)
    got.sort(key=lambda item: (item.video_index, item.clip_start))
    assert_same_batches(got, expected)


def test_a_slot_is_not_reused_before_its_release_and_oversized_batches_travel_as_tensors(tiny_videos):
    sources = [VideoSource("v", tiny_videos["path"][0])]
    expected = list(ClipBatchDataset(sources, SAMPLING, clips_per_chunk=4, batch_size=2))
    assert len(expected) > 3
    # One slot: the worker must wait for each release before it can write the next batch.
    one_slot = ClipSlots(num_workers=1, slots_per_worker=1, slot_bytes=expected[0].clips.numel())
    loader = iter(slotted_loader(ClipBatchDataset(sources, SAMPLING, 4, 2, slots=one_slot), 1))
    first = next(loader)
    clips = one_slot.receive(first, channels_last=False).clips
    time.sleep(0.5)  # time enough for the worker to overwrite the slot, had it not waited
    np.testing.assert_array_equal(clips.numpy(), expected[0].clips.numpy())
    one_slot.release(first)
    for item, reference in zip(loader, expected[1:]):
        np.testing.assert_array_equal(one_slot.receive(item, False).clips.numpy(), reference.clips.numpy())
        one_slot.release(item)
    # Slots too small for any batch: the clips come as tensors, as without slots.
    tiny = ClipSlots(num_workers=1, slots_per_worker=2, slot_bytes=16)
    items = list(slotted_loader(ClipBatchDataset(sources, SAMPLING, 4, 2, slots=tiny), 1))
    assert all(item.slot == -1 and tiny.receive(item, False) is item for item in items)
    assert_same_batches(items, expected)


# ------------------------------------------------------------------ inputs as users give them


def remux_to_mpegts(src, dst):
    """The same H.264 packets in an MPEG-TS container (what an AVCHD camera's .MTS holds)."""
    with av.open(str(src)) as source, av.open(str(dst), "w", format="mpegts") as target:
        copy = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = copy
                target.mux(packet)
    return dst


def dataset_items(sources, sampling=SAMPLING):
    return list(ClipBatchDataset(sources, sampling, clips_per_chunk=6, batch_size=4))


def assert_same_batches(got, expected):
    assert [(item.video_id, item.clip_start, item.is_last) for item in got] == \
        [(item.video_id, item.clip_start, item.is_last) for item in expected]
    for item, reference in zip(got, expected):
        np.testing.assert_array_equal(item.clips.numpy(), reference.clips.numpy(), err_msg=item.video_id)
        np.testing.assert_array_equal(item.times_sec, reference.times_sec)
        assert (item.num_clips, item.duration_sec, item.native_fps) == \
            (reference.num_clips, reference.duration_sec, reference.native_fps)


def test_tar_gz_members_and_mts_files_decode_like_the_plain_files(tiny_videos, tmp_path):
    paths = [Path(path) for path in tiny_videos["path"][:2]]
    expected = dataset_items([VideoSource(path.stem, str(path)) for path in paths])
    for suffix in (".tar.gz", ".tgz"):
        archive = tmp_path / f"videos{suffix}"
        with tarfile.open(archive, "w:gz") as tar:
            for path in paths:
                tar.add(path, arcname=f"clips/{path.name}")
        sources = list_sources(str(archive))
        assert [source.member_offset for source in sources] == [-1, -1]  # streamed, not read in place
        assert_same_batches(dataset_items(sources), expected)
    # An MP4 named .mts, and a real MPEG-TS holding the same packets: the same frames.
    named = tmp_path / "named" / f"{paths[0].stem}.mts"
    named.parent.mkdir()
    shutil.copy(paths[0], named)
    transport = remux_to_mpegts(paths[0], tmp_path / f"{paths[0].stem}.MTS")
    expected_first = [item for item in expected if item.video_id == paths[0].stem]
    for single in (named, transport):
        sources = list_sources(str(single))
        assert [(source.video_id, source.path) for source in sources] == [(paths[0].stem, str(single))]
        assert_same_batches(dataset_items(sources), expected_first)


def test_run_extract_reads_a_tar_gz_and_a_single_mts(tmp_path, make_run, tiny_videos):
    def read(path):
        with FeatureStore(path) as store:
            return {video_id: store.get(video_id) for video_id in store.video_ids}

    paths = [Path(path) for path in tiny_videos["path"][:2]]
    cfg, plain = make_run(tmp_path / "plain", f"extract.videos={tmp_path / 'list.txt'}")
    (tmp_path / "list.txt").write_text("".join(f"{path}\n" for path in paths))
    run_extract(cfg, plain)
    expected = read(plain.features_h5)
    archive = tmp_path / "videos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in paths:
            tar.add(path, arcname=path.name)
    transport = remux_to_mpegts(paths[0], tmp_path / f"{paths[0].stem}.mts")
    for name, videos, ids in (("targz", archive, [p.stem for p in paths]), ("mts", transport, [paths[0].stem])):
        cfg, run = make_run(tmp_path / name, f"extract.videos={videos}", "runtime.num_workers=1")
        run_extract(cfg, run)
        got = read(run.features_h5)
        assert sorted(got) == sorted(ids)
        for video_id in ids:
            np.testing.assert_array_equal(got[video_id][1], expected[video_id][1])
            np.testing.assert_allclose(got[video_id][0], expected[video_id][0], rtol=0, atol=1e-5)


# A bad video and a good one through a DataLoader worker: one VideoFailure, and nothing on stderr.
_QUIET_CHILD = """
import sys
from torch.utils.data import DataLoader
from features.decode import ClipBatchDataset, ClipSampling, VideoFailure, keep_item
from features.sources import list_sources
sampling = ClipSampling(fps=30.0, num_frames=2, interval_frames=2, stride_frames=8, short_side=32)
dataset = ClipBatchDataset(list_sources(sys.argv[1]), sampling, clips_per_chunk=8, batch_size=8)
for item in DataLoader(dataset, batch_size=None, num_workers=1, collate_fn=keep_item):
    if isinstance(item, VideoFailure):
        print("failed", item.video_id, item.reason)
    elif item.is_last:
        print("done", item.video_id)
"""


def test_a_bad_video_costs_one_line_and_no_decoder_noise(tiny_videos, tmp_path):
    good = Path(tiny_videos["path"][0])
    data = good.read_bytes()
    (tmp_path / "zeroed.mp4").write_bytes(data[:2000] + bytes(len(data) - 4000) + data[-2000:])
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    listed = tmp_path / "videos.txt"
    listed.write_text(f"{tmp_path / 'zeroed.mp4'}\n{tmp_path / 'cut.mp4'}\n{good}\n")
    result = subprocess.run([sys.executable, "-c", _QUIET_CHILD, str(listed)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["failed", "zeroed"], ["failed", "cut"], ["done", good.stem]]
