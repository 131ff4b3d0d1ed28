"""The extract stage, in process, on the tiny synthetic set: layout, values, inputs, failures, shards."""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from backbone.build import build_model
from backbone.clips import clips_to_tensor
from data.video import VideoError, VideoReader
from features import extract as extract_module
from features import loop
from features.extract import ExtractionFailed, run_extract, state_dict_sha256
from features.merge import main as merge_main
from features.windows import clip_grid
from formats.failures import read_failures
from formats.features import FeatureStore, FeatureStoreMismatch

NUM_FRAMES, INTERVAL, STRIDE, FPS, SHORT_SIDE = 4, 4, 8, 30.0, 32  # pinned by conftest.SETTINGS


def read_store(path):
    with FeatureStore(path) as store:
        return {video_id: store.get(video_id) for video_id in store.video_ids}, store.attrs


def assert_same_features(got, expected, atol=0.0):
    assert sorted(got) == sorted(expected)
    for video_id, (features, times) in expected.items():
        np.testing.assert_array_equal(got[video_id][1], times, err_msg=video_id)
        np.testing.assert_allclose(got[video_id][0], features, rtol=0, atol=atol, err_msg=video_id)


def reference_model():
    """The random-weight model the stage builds (the pinned model settings, runtime.seed 0)."""
    torch.manual_seed(0)
    return build_model("tada2d", 18, {}, width=4, num_frames=NUM_FRAMES, dropout=0.5).eval()


def list_file(tmp_path, paths, name="videos.txt"):
    path = tmp_path / name
    path.write_text("".join(f"{p}\n" for p in paths))
    return path


def val_videos(tiny_videos):
    return tiny_videos[tiny_videos["subset"] == "validation"].reset_index(drop=True)


# ------------------------------------------------------------------ layout and values


def test_features_match_clip_grid_and_a_direct_computation(tmp_path, make_run, tiny_videos, caplog):
    cfg, paths = make_run(tmp_path / "work", "extract.dtype=float32")
    run_extract(cfg, paths)
    got, attrs = read_store(paths.features_h5)
    assert sorted(got) == sorted(tiny_videos["video_id"])  # dataset.subsets: training and validation
    assert (attrs["fps"], attrs["num_frames"], attrs["interval"], attrs["stride"], attrs["short_side"]) == \
        (FPS, NUM_FRAMES, INTERVAL, STRIDE, SHORT_SIDE)
    model = reference_model()
    assert (attrs["dim"], attrs["dtype"], attrs["backbone"], attrs["crop"]) == \
        (32, "float32", "tada2d", "none")
    assert attrs["checkpoint_sha256"] == state_dict_sha256(model)
    assert attrs["config"]["extract"]["weights"] == "random"

    with FeatureStore(paths.features_h5) as store:
        for _, (video_id, path, native_fps) in tiny_videos[["video_id", "path", "fps"]].iterrows():
            reader = VideoReader(path, short_side=SHORT_SIDE)
            grid = clip_grid(reader.duration, FPS, NUM_FRAMES, INTERVAL, STRIDE)
            features, times = got[video_id]
            assert features.shape == (grid.num_clips, 32)
            np.testing.assert_array_equal(times, grid.clip_centers_sec)
            video_attrs = store.video_attrs(video_id)
            assert video_attrs["duration"] == pytest.approx(reader.duration)
            assert video_attrs["native_fps"] == pytest.approx(native_fps)
            assert video_attrs["complete"]

    # Two clips of two videos computed directly: decode at the clip's frame times, run the model.
    for video_id, path in list(zip(tiny_videos["video_id"], tiny_videos["path"]))[:2]:
        reader = VideoReader(path, short_side=SHORT_SIDE)
        grid = clip_grid(reader.duration, FPS, NUM_FRAMES, INTERVAL, STRIDE)
        for clip in (1, grid.num_clips - 1):  # the last clip is padded with the last frame
            frames = reader.frames_at(grid.clip_frame_times_sec[clip])  # (T, H, W, 3)
            with torch.no_grad():
                expected = model.forward_features(clips_to_tensor(frames[None]))[0].numpy()
            np.testing.assert_allclose(got[video_id][0][clip], expected, rtol=1e-4, atol=1e-5)

    # Same fingerprint: the stage says so and does nothing.
    mtime = paths.features_h5.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        run_extract(cfg, paths)
    assert "nothing to do" in caplog.text
    assert paths.features_h5.stat().st_mtime_ns == mtime


def test_workers_chunks_and_batches_do_not_change_features(tmp_path, make_run):
    base = ["dataset.subsets=[validation]", "extract.dtype=float32"]
    cfg, paths = make_run(tmp_path / "one", *base, "extract.clips_per_chunk=64", "extract.batch_size=64")
    run_extract(cfg, paths)
    # Chunks of 3 clips keep frames across chunk boundaries; two workers decode two videos at once.
    cfg, other = make_run(tmp_path / "two", *base, "extract.clips_per_chunk=3", "extract.batch_size=2",
                          "runtime.num_workers=2")
    run_extract(cfg, other)
    assert_same_features(read_store(other.features_h5)[0], read_store(paths.features_h5)[0], atol=1e-5)


def test_channels_last_and_contiguous_input_give_the_same_features(tmp_path, make_run, monkeypatch):
    """extract.channels_last (the default, CPU included) changes the memory layout only: the decoding
    workers hand over clips in the encoder's layout, the model sees channels-last frames, and the
    features equal those of contiguous input up to rounding."""
    stem_inputs = []

    class RecordingEncoder(loop.ClipEncoder):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            model.conv1.register_forward_pre_hook(lambda module, inputs: stem_inputs.append(inputs[0]))

    monkeypatch.setattr(extract_module, "ClipEncoder", RecordingEncoder)
    base = ["dataset.subsets=[validation]", "extract.dtype=float32", "runtime.num_workers=1"]
    cfg, paths = make_run(tmp_path / "cl", *base)
    assert cfg.extract.channels_last
    run_extract(cfg, paths)
    assert stem_inputs and all(frames.is_contiguous(memory_format=torch.channels_last) for frames in stem_inputs)
    stem_inputs.clear()
    cfg, other = make_run(tmp_path / "contiguous", *base, "extract.channels_last=false")
    run_extract(cfg, other)
    # (a one-clip batch folds its (1, 3, T, H, W) clip into frames by a view, not contiguous then)
    assert stem_inputs and not any(frames.is_contiguous(memory_format=torch.channels_last) for frames in stem_inputs)
    assert_same_features(read_store(other.features_h5)[0], read_store(paths.features_h5)[0], atol=1e-5)


# ------------------------------------------------------------------ inputs


@pytest.mark.slow
def test_archives_globs_and_lists_give_the_features_of_plain_files(tmp_path, make_run, tiny_videos):
    videos = val_videos(tiny_videos)
    cfg, paths = make_run(tmp_path / "plain", "dataset.subsets=[validation]")
    run_extract(cfg, paths)
    expected = read_store(paths.features_h5)[0]

    tar_path, zip_path = tmp_path / "videos.tar", tmp_path / "videos.zip"
    (tmp_path / "notes.txt").write_text("not a video")
    with tarfile.open(tar_path, "w") as tar, zipfile.ZipFile(zip_path, "w") as zip_file:
        for path in videos["path"]:
            member = f"clips/{Path(path).parent.name}/{Path(path).name}"
            tar.add(path, arcname=member)
            zip_file.write(path, arcname=member)  # deflated
        tar.add(tmp_path / "notes.txt", arcname="clips/notes.txt")
        zip_file.write(tmp_path / "notes.txt", arcname="notes.txt")
    video_dir = tmp_path / "flat"
    video_dir.mkdir()
    for path in videos["path"]:
        shutil.copy(path, video_dir)
    inputs = {
        "tar": tar_path,
        "zip": zip_path,
        "glob": f"{video_dir}/*.mp4",
        "folder": video_dir,
        "list": list_file(tmp_path, [os.path.relpath(path, tmp_path) for path in videos["path"]]),
    }
    for name, videos_value in inputs.items():
        cfg, other = make_run(tmp_path / name, f"extract.videos={videos_value}")
        run_extract(cfg, other)
        assert_same_features(read_store(other.features_h5)[0], expected)


# ------------------------------------------------------------------ bad videos


def test_bad_videos_are_recorded_and_only_they_are_retried(tmp_path, make_run, tiny_videos, monkeypatch):
    good = list(val_videos(tiny_videos)["path"][:2])
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    content = Path(good[0]).read_bytes()
    (bad_dir / "truncated.mp4").write_bytes(content[: len(content) // 3])
    (bad_dir / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20_000))
    (bad_dir / "empty.mp4").write_bytes(b"")
    bad = [bad_dir / "truncated.mp4", bad_dir / "noise.mp4", bad_dir / "empty.mp4", bad_dir / "missing.mp4"]
    videos = list_file(tmp_path, [*good, *bad])

    attempted = []
    real_extract_videos = loop.extract_videos

    def spy(sources, *args, **kwargs):
        attempted.append(sorted(source.video_id for source in sources))
        return real_extract_videos(sources, *args, **kwargs)

    monkeypatch.setattr("features.extract.extract_videos", spy)
    cfg, paths = make_run(tmp_path / "work", f"extract.videos={videos}")
    with pytest.raises(ExtractionFailed) as failed:
        run_extract(cfg, paths)
    assert str(failed.value) == f"4 of 6 videos failed, see {paths.failed_videos}"
    failures = {row.video_id: row for row in read_failures(paths.failed_videos)}
    assert sorted(failures) == ["empty", "missing", "noise", "truncated"]
    assert failures["missing"].reason == "file not found"
    assert failures["empty"].reason == "empty file (0 bytes)"
    assert failures["noise"].reason.startswith("cannot open")
    assert failures["truncated"].path == str(bad_dir / "truncated.mp4")
    assert sorted(read_store(paths.features_h5)[0]) == sorted(Path(path).stem for path in good)

    # Repair two of the files: the rerun tries the four failures only, and lists the two still failing.
    shutil.copy(good[0], bad_dir / "truncated.mp4")
    shutil.copy(good[1], bad_dir / "missing.mp4")
    with pytest.raises(ExtractionFailed, match="^2 of 6 videos failed"):
        run_extract(cfg, paths)
    assert attempted[1] == ["empty", "missing", "noise", "truncated"]
    assert sorted(row.video_id for row in read_failures(paths.failed_videos)) == ["empty", "noise"]
    got = read_store(paths.features_h5)[0]
    assert len(got) == 4
    np.testing.assert_array_equal(got["truncated"][0], got[Path(good[0]).stem][0])

    # Once nothing fails the list is removed and the stage is stamped complete.
    (bad_dir / "empty.mp4").unlink()
    (bad_dir / "noise.mp4").unlink()
    videos.write_text("".join(f"{p}\n" for p in [*good, bad[0], bad[3]]))
    run_extract(cfg, paths)
    assert not paths.failed_videos.exists()
    assert attempted[2] == []


def test_a_video_failing_mid_way_leaves_no_trace(tmp_path, make_run, tiny_videos, monkeypatch):
    videos = val_videos(tiny_videos)
    victim = videos["path"][1]
    real_frames = VideoReader.frames
    calls = {"count": 0}

    def frames(self, indices):
        if self.name == victim:
            calls["count"] += 1
            if calls["count"] == 3:  # after two chunks of this video were written
                raise VideoError(self.name, "decoding frames 40..50 failed: corrupt slice")
        return real_frames(self, indices)

    monkeypatch.setattr(VideoReader, "frames", frames)
    cfg, paths = make_run(tmp_path / "work", "dataset.subsets=[validation]", "extract.clips_per_chunk=5")
    with pytest.raises(ExtractionFailed, match="^1 of 3 videos failed"):
        run_extract(cfg, paths)
    [failure] = read_failures(paths.failed_videos)
    assert failure.video_id == videos["video_id"][1]
    assert failure.reason == "decoding frames 40..50 failed: corrupt slice"
    with h5py.File(paths.features_h5, "r") as h5file:
        assert sorted(h5file["videos"]) == sorted(videos["video_id"][[0, 2]])  # nothing of the failed one
    assert not list(paths.features_dir.glob("features.h5.parts/*"))


def test_a_crashing_decoder_process_fails_only_its_video(tmp_path, make_run, tiny_videos, monkeypatch):
    videos = val_videos(tiny_videos)
    victim = videos["path"][2]
    real_init = VideoReader.__init__

    def init(self, source, *args, **kwargs):
        if str(source) == victim:
            os._exit(139)  # what a segfault in the decoder looks like to the DataLoader: no exception
        real_init(self, source, *args, **kwargs)

    monkeypatch.setattr(VideoReader, "__init__", init)
    cfg, paths = make_run(tmp_path / "work", "dataset.subsets=[validation]", "runtime.num_workers=2")
    with pytest.raises(ExtractionFailed, match="^1 of 3 videos failed"):
        run_extract(cfg, paths)
    [failure] = read_failures(paths.failed_videos)
    assert failure.video_id == videos["video_id"][2]
    assert failure.reason.startswith("decoding process died")
    assert sorted(read_store(paths.features_h5)[0]) == sorted(videos["video_id"][[0, 1]])


@pytest.mark.parametrize("decoder_nice", [0, 3])
def test_decoding_workers_run_at_the_configured_lower_priority(tmp_path, make_run, tiny_videos, monkeypatch,
                                                               decoder_nice):
    def init(self, source, *args, **kwargs):  # in the worker: report its nice value as the failure reason
        raise VideoError(str(source), f"nice {os.nice(0)}")

    monkeypatch.setattr(VideoReader, "__init__", init)
    cfg, paths = make_run(tmp_path / "work", "dataset.subsets=[validation]", "runtime.num_workers=2",
                          f"runtime.decoder_nice={decoder_nice}")
    with pytest.raises(ExtractionFailed, match="^3 of 3 videos failed"):
        run_extract(cfg, paths)
    expected = min(os.nice(0) + decoder_nice, 19)
    assert {failure.reason for failure in read_failures(paths.failed_videos)} == {f"nice {expected}"}
    assert os.nice(0) == expected - decoder_nice or expected == 19  # the main process keeps its priority


# ------------------------------------------------------------------ settings and shards


def test_other_settings_are_refused_unless_overwrite(tmp_path, make_run, tiny_videos):
    videos = list_file(tmp_path, val_videos(tiny_videos)["path"][:1])
    cfg, paths = make_run(tmp_path / "work", f"extract.videos={videos}")
    run_extract(cfg, paths)
    cfg, paths = make_run(tmp_path / "work", f"extract.videos={videos}", "extract.stride=16")
    with pytest.raises(FeatureStoreMismatch, match="stride: old=8 new=16.*extract.overwrite=true"):
        run_extract(cfg, paths)
    cfg, paths = make_run(tmp_path / "work", f"extract.videos={videos}", "extract.crop=center")
    with pytest.raises(FeatureStoreMismatch, match="crop: old='none' new='center'"):
        run_extract(cfg, paths)
    cfg, paths = make_run(tmp_path / "work", f"extract.videos={videos}", "extract.stride=16",
                          "extract.overwrite=true")
    run_extract(cfg, paths)
    got, attrs = read_store(paths.features_h5)
    assert attrs["stride"] == 16
    np.testing.assert_allclose(np.diff(next(iter(got.values()))[1]), 16 / FPS)


def test_job_array_shards_merge_into_the_single_process_result(tmp_path, make_run, tiny_videos):
    videos = val_videos(tiny_videos)
    paths_list = [*videos["path"], tmp_path / "missing.mp4"]
    listed = list_file(tmp_path, paths_list)
    cfg, single = make_run(tmp_path / "single", f"extract.videos={listed}")
    with pytest.raises(ExtractionFailed):
        run_extract(cfg, single)

    work = tmp_path / "sharded"
    errors = []
    for index in range(2):
        cfg, paths = make_run(work, f"extract.videos={listed}", f"extract.shard={index}/2")
        try:
            run_extract(cfg, paths)
        except ExtractionFailed as error:  # the shard holding missing.mp4
            errors.append((index, str(error)))
    [(index, message)] = errors
    assert message == f"1 of 2 videos failed, see {paths.features_dir / f'failed.rank{index}-of-2.tsv'}"
    assert not paths.features_h5.exists()
    assert merge_main([str(paths.features_h5)]) == 1  # one video failed
    assert_same_features(read_store(paths.features_h5)[0], read_store(single.features_h5)[0])
    assert [row.video_id for row in read_failures(paths.failed_videos)] == ["missing"]
    assert not [path.name for path in paths.features_dir.iterdir() if ".rank" in path.name]  # shards removed
    assert merge_main([str(paths.features_h5)]) == 2  # nothing left to merge


# ------------------------------------------------------------------ weights


def test_checkpoint_and_pretrained_weights(tmp_path, make_run, tiny_videos):
    from backbone.weights import save_checkpoint
    from features.extract import file_sha256

    videos = list_file(tmp_path, val_videos(tiny_videos)["path"][:1])
    cfg, random_run = make_run(tmp_path / "random", f"extract.videos={videos}", "extract.dtype=float32")
    run_extract(cfg, random_run)
    expected = read_store(random_run.features_h5)[0]

    # Our checkpoint, written by fine-tuning with a 2-frame model: its model section wins over the config's.
    torch.manual_seed(1)
    finetuned = build_model("tada2d", 18, {"verb": 3, "noun": 2}, width=4, num_frames=2)
    config = {"model": {"name": "tada2d", "depth": 18, "width": 4, "num_frames": 2, "interval": 3,
                        "dropout": 0.5, "route_reduction": 4, "route_kernels": [3, 3]}}
    cfg, paths = make_run(tmp_path / "finetuned", f"extract.videos={videos}", "extract.weights=checkpoint")
    with pytest.raises(FileNotFoundError, match="run --stage finetune first"):
        run_extract(cfg, paths)
    classes = {"verb": ["a", "b", "c"], "noun": ["x", "y"]}
    save_checkpoint(paths.checkpoint, finetuned, config, classes, epoch=3)
    run_extract(cfg, paths)
    got, attrs = read_store(paths.features_h5)
    assert (attrs["num_frames"], attrs["interval"], attrs["weights"]) == (2, 3, "checkpoint")
    assert attrs["checkpoint_sha256"] == file_sha256(paths.checkpoint)
    [(features, times)] = got.values()
    reader = VideoReader(val_videos(tiny_videos)["path"][0], short_side=SHORT_SIDE)
    grid = clip_grid(reader.duration, FPS, 2, 3, STRIDE)
    np.testing.assert_array_equal(times, grid.clip_centers_sec)
    frames = reader.frames_at(grid.clip_frame_times_sec[3])  # (T, H, W, 3)
    with torch.no_grad():
        direct = finetuned.eval().forward_features(clips_to_tensor(frames[None]))
    np.testing.assert_allclose(features[3], direct[0].numpy(), rtol=1e-3, atol=1e-3)  # stored as float16

    # A bare (torchvision-style) state dict as model.pretrained: the random run's weights give its features.
    state_file = tmp_path / "resnet.pth"
    torch.save(reference_model().state_dict(), state_file)
    cfg, paths = make_run(tmp_path / "pretrained", f"extract.videos={videos}", "extract.weights=pretrained",
                          f"model.pretrained={state_file}", "extract.dtype=float32")
    run_extract(cfg, paths)
    got, attrs = read_store(paths.features_h5)
    assert attrs["checkpoint_sha256"] == file_sha256(state_file)
    assert_same_features(got, expected)


# ------------------------------------------------------------------ the decoding thread (num_workers=0)


def test_the_decoding_thread_yields_every_item_in_order_and_raises_where_the_producer_failed():
    assert list(loop.decoded_in_thread(iter(range(50)), prefetch=3)) == list(range(50))

    def failing():
        yield from range(5)
        raise OSError("disk gone")

    received = []
    with pytest.raises(OSError, match="disk gone"):
        for item in loop.decoded_in_thread(failing(), prefetch=2):
            received.append(item)
    assert received == list(range(5))


def test_leaving_the_decoding_thread_early_stops_it_and_closes_its_source():
    closed = []

    def endless():
        try:
            count = 0
            while True:
                yield count
                count += 1
        finally:
            closed.append(True)

    stream = loop.decoded_in_thread(endless(), prefetch=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # what a `for` loop left by an exception does
    assert closed == [True]
    assert not any(thread.name == "decode" and thread.is_alive() for thread in threading.enumerate())
