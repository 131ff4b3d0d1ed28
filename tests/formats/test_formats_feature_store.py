"""HDF5 feature store: layout, resume, crash recovery, reader in workers, shards."""

import math
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

from formats.feature_shards import assign_shards, merge_shards, shard_path
from formats.feature_writer import FeatureWriter
from formats.features import FORMAT, FeatureStore, FeatureStoreError, FeatureStoreMismatch

DIM = 6


def make_attrs(**changes):
    attrs = dict(backbone="tada2d", checkpoint_sha256="ab" * 32, fps=30, num_frames=8, interval=8,
                 stride=16, short_side=128, dim=DIM, config={"dataset": {"name": "synthetic"}, "seed": 3})
    attrs.update(changes)
    return attrs


def video_data(index, num_clips):
    rng = np.random.default_rng(index)
    features = rng.standard_normal((num_clips, DIM)) * 3
    times = (16 * np.arange(num_clips) + 28) / 30.0
    return features, times


def write_video(writer, video_id, index, num_clips, chunk=3):
    features, times = video_data(index, num_clips)
    writer.begin_video(video_id, duration=num_clips * 16 / 30, native_fps=29.97, num_clips=num_clips)
    for start in range(0, num_clips, chunk):
        writer.write_chunk(video_id, start, features[start:start + chunk], times[start:start + chunk])
    writer.finish_video(video_id)
    return features, times


def read_all(path):
    with FeatureStore(path) as store:
        return {video_id: (*store.get(video_id), store.video_attrs(video_id)) for video_id in store.video_ids}


# ------------------------------------------------------------------ layout and round trip


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "features.h5"
    with FeatureWriter(path, make_attrs(note="demo")) as writer:
        assert writer.completed_video_ids() == []
        expected = {video_id: write_video(writer, video_id, index, num_clips)
                    for index, (video_id, num_clips) in enumerate([("v_b", 7), ("v_a", 1), ("P01_11", 4)])}
    assert not (tmp_path / "features.h5.parts").exists()

    with h5py.File(path, "r") as h5file:  # the raw layout of DESIGN.md
        assert h5file.attrs["format"] == FORMAT
        assert h5file.attrs["stride"] == 16 and h5file.attrs["dim"] == DIM
        assert h5file.attrs["dtype"] == "float16" and h5file.attrs["note"] == "demo"
        group = h5file["videos/v_b"]
        assert group["features"].dtype == np.float16 and group["features"].shape == (7, DIM)
        assert group["times"].dtype == np.float64
        assert bool(group.attrs["complete"]) is True
        assert group.attrs["native_fps"] == pytest.approx(29.97)

    with FeatureStore(path) as store:
        assert store.video_ids == ["P01_11", "v_a", "v_b"]
        assert len(store) == 3 and "v_a" in store and "v_c" not in store
        attrs = store.attrs
        assert attrs["config"] == {"dataset": {"name": "synthetic"}, "seed": 3}
        assert attrs["fps"] == 30.0 and attrs["backbone"] == "tada2d"
        for video_id, (features, times) in expected.items():
            got_features, got_times = store.get(video_id)
            assert got_features.dtype == np.float32 and got_times.dtype == np.float64
            np.testing.assert_array_equal(got_features, features.astype(np.float16).astype(np.float32))
            np.testing.assert_array_equal(got_times, times)
        assert store.video_attrs("v_b") == {"duration": pytest.approx(7 * 16 / 30), "native_fps": 29.97,
                                            "complete": True, "num_clips": 7}
        with pytest.raises(KeyError, match=r"'v_c' not present in feature store .*features\.h5"):
            store.get("v_c")
        # A window of rows 2..4 of v_b.
        window_features, window_times = store.get("v_b", 2, 5)
        np.testing.assert_array_equal(window_features, expected["v_b"][0][2:5].astype(np.float16))
        np.testing.assert_array_equal(window_times, expected["v_b"][1][2:5])
        with pytest.raises(IndexError, match="clip rows 5..8 outside 0..7"):
            store.get("v_b", 5, 8)


def test_float32_store_is_exact(tmp_path):
    path = tmp_path / "f32.h5"
    with FeatureWriter(path, make_attrs(), dtype="float32") as writer:
        features, _ = write_video(writer, "x", 5, 9, chunk=4)
    got, _ = FeatureStore(path).get("x")
    np.testing.assert_array_equal(got, features.astype(np.float32))


def test_empty_run_still_writes_file(tmp_path):
    path = tmp_path / "empty.h5"
    FeatureWriter(path, make_attrs()).close()
    with FeatureStore(path) as store:
        assert store.video_ids == [] and len(store) == 0 and store.attrs["dim"] == DIM


# ------------------------------------------------------------------ settings mismatch


def test_mismatch_names_what_differs_and_overwrite_starts_fresh(tmp_path):
    path = tmp_path / "features.h5"
    with FeatureWriter(path, make_attrs()) as writer:
        write_video(writer, "a", 0, 3)
    with pytest.raises(FeatureStoreMismatch) as info:
        FeatureWriter(path, make_attrs(stride=8, checkpoint_sha256="cd" * 32))
    message = str(info.value)
    assert "stride: old=16 new=8" in message
    assert f"checkpoint_sha256: old='{'ab' * 32}' new='{'cd' * 32}'" in message
    assert "fps" not in message and str(path) in message
    with pytest.raises(FeatureStoreMismatch, match="dtype: old='float16' new='float32'"):
        FeatureWriter(path, make_attrs(), dtype="float32")
    # Same identifying attrs, another config text: resumes.
    with FeatureWriter(path, make_attrs(config="other: 1\n")) as writer:
        assert writer.completed_video_ids() == ["a"]
    with FeatureWriter(path, make_attrs(stride=8), overwrite=True) as writer:
        assert writer.completed_video_ids() == []
        write_video(writer, "b", 1, 2)
    with FeatureStore(path) as store:
        assert store.video_ids == ["b"] and store.attrs["stride"] == 8


def test_parts_of_another_setting_are_refused(tmp_path):
    path = tmp_path / "features.h5"
    writer = FeatureWriter(path, make_attrs())
    write_video(writer, "a", 0, 3)
    writer.__exit__(RuntimeError, RuntimeError("stop"), None)  # error exit: parts kept, no consolidation
    assert not path.exists()
    with pytest.raises(FeatureStoreMismatch, match="unfinished parts .*short_side: old=128 new=224"):
        FeatureWriter(path, make_attrs(short_side=224))
    with FeatureWriter(path, make_attrs()) as writer:
        assert writer.completed_video_ids() == ["a"]
    assert FeatureStore(path).video_ids == ["a"]


@pytest.mark.parametrize("changes, message", [
    (dict(dim=0), "'dim' must be a positive integer"),
    (dict(fps=float("nan")), "'fps' must be finite"),
    (dict(backbone=3), "'backbone' must be a string"),
    (dict(extra=[1, 2]), "extra attr 'extra'"),
])
def test_bad_root_attrs(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        FeatureWriter(tmp_path / "f.h5", make_attrs(**changes))


def test_missing_root_attrs_and_bad_dtype(tmp_path):
    attrs = make_attrs()
    del attrs["stride"]
    with pytest.raises(ValueError, match=r"missing \['stride'\]"):
        FeatureWriter(tmp_path / "f.h5", attrs)
    with pytest.raises(ValueError, match="dtype must be one of"):
        FeatureWriter(tmp_path / "f.h5", make_attrs(), dtype="bfloat16")


# ------------------------------------------------------------------ writing errors


def test_write_errors(tmp_path):
    with FeatureWriter(tmp_path / "f.h5", make_attrs()) as writer:
        with pytest.raises(ValueError, match="non-empty string without '/'"):
            writer.begin_video("a/b", 1.0, 30.0, 2)
        with pytest.raises(ValueError, match="duration"):
            writer.begin_video("a", -1.0, 30.0, 2)
        with pytest.raises(FeatureStoreError, match="was not begun"):
            writer.write_chunk("a", 0, np.zeros((1, DIM)), np.zeros(1))
        writer.begin_video("a", 1.0, float("nan"), 4)
        with pytest.raises(ValueError, match=r"shape \(n, 6\)"):
            writer.write_chunk("a", 0, np.zeros((2, DIM + 1)), np.zeros(2))
        with pytest.raises(ValueError, match=r"times must have shape \(2,\)"):
            writer.write_chunk("a", 0, np.zeros((2, DIM)), np.zeros(3))
        with pytest.raises(ValueError, match="exceed the 4 clip rows"):
            writer.write_chunk("a", 3, np.zeros((2, DIM)), np.zeros(2))
        with pytest.raises(ValueError, match="non-finite"):
            writer.write_chunk("a", 0, np.full((2, DIM), np.nan), np.zeros(2))
        with pytest.raises(ValueError, match="beyond the float16 range"):
            writer.write_chunk("a", 0, np.full((2, DIM), 1e6), np.zeros(2))
        writer.write_chunk("a", 0, np.ones((2, DIM)), np.zeros(2))
        with pytest.raises(FeatureStoreError, match="2 of 4 clip rows never written \\(first 2\\)"):
            writer.finish_video("a")
        writer.write_chunk("a", 2, np.ones((2, DIM)), np.ones(2))
        writer.finish_video("a")
        with pytest.raises(FeatureStoreError, match="already complete"):
            writer.begin_video("a", 1.0, 30.0, 2)
        # A second writer on the same path is refused while this one is open.
        with pytest.raises(FeatureStoreError, match=r"another writer is writing .* \(in this process\)"):
            FeatureWriter(tmp_path / "f.h5", make_attrs())
        # Restarting a video in progress, and aborting one, leave nothing behind.
        writer.begin_video("b", 1.0, 30.0, 2)
        writer.begin_video("b", 1.0, 30.0, 1)
        writer.begin_video("c", 1.0, 30.0, 1)
        writer.abort_video("c")
    with FeatureStore(tmp_path / "f.h5") as store:
        assert store.video_ids == ["a"]
        assert math.isnan(store.video_attrs("a")["native_fps"])  # unknown native fps kept as NaN
        np.testing.assert_array_equal(store.get("a")[1], [0, 0, 1, 1])


# ------------------------------------------------------------------ recovery states


def crash_child(path, body):
    """Run body(writer) in a forked child that then dies without any cleanup (like SIGKILL)."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            writer = FeatureWriter(path, make_attrs())
            body(writer)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_lock_of_a_killed_writer_is_not_held_by_its_forked_children(tmp_path):
    """A killed writer's forked DataLoader workers live on for seconds: they must not keep the lock."""
    path = tmp_path / "features.h5"
    read_end, write_end = os.pipe()
    writer_pid = os.fork()
    if writer_pid == 0:  # the writer process
        try:
            FeatureWriter(path, make_attrs())
            if os.fork() == 0:  # its "worker": lives on after the writer dies
                os.close(write_end)
                os.read(read_end, 1)  # until the test closes the pipe
                os._exit(0)
        finally:
            os._exit(0)  # dies holding the writer open, without cleanup
    os.close(read_end)
    try:
        _, status = os.waitpid(writer_pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        with FeatureWriter(path, make_attrs()) as writer:  # the worker is still alive here
            assert writer.completed_video_ids() == []
    finally:
        os.close(write_end)  # lets the orphaned worker exit


def test_resume_after_crash_mid_video(tmp_path):
    path = tmp_path / "features.h5"

    def body(writer):
        write_video(writer, "a", 0, 5)
        writer.begin_video("b", 1.0, 30.0, 5)
        writer.write_chunk("b", 0, np.ones((2, DIM)), np.zeros(2))

    crash_child(path, body)
    assert list((tmp_path / "features.h5.parts").glob("*.h5.tmp"))  # the interrupted video
    with FeatureWriter(path, make_attrs()) as writer:
        assert writer.completed_video_ids() == ["a"]
        assert not list(writer.parts_dir.glob("*.h5.tmp"))
        write_video(writer, "b", 1, 5)
    result = read_all(path)
    assert sorted(result) == ["a", "b"]
    np.testing.assert_array_equal(result["b"][0], video_data(1, 5)[0].astype(np.float16))


def test_recovery_from_kill_during_and_after_consolidation(tmp_path):
    path = tmp_path / "features.h5"
    with FeatureWriter(path, make_attrs()) as writer:
        write_video(writer, "a", 0, 3)

    writer = FeatureWriter(path, make_attrs())
    write_video(writer, "b", 1, 4)
    write_video(writer, "c%2F d.h5", 2, 2)  # an id that needs quoting as a file name
    saved_parts = tmp_path / "saved_parts"
    shutil.copytree(writer.parts_dir, saved_parts)
    writer.close()
    reference = read_all(path)
    assert sorted(reference) == ["a", "b", "c%2F d.h5"]

    # Killed after the replace, before the parts were deleted: parts are recognised as done and dropped.
    shutil.rmtree(tmp_path / "features.h5.parts", ignore_errors=True)
    shutil.copytree(saved_parts, tmp_path / "features.h5.parts")
    # Killed mid-consolidation: a half-written merge file lies next to the main file.
    (tmp_path / "features.h5.tmp-merge").write_bytes(os.urandom(3000))
    with FeatureWriter(path, make_attrs()) as writer:
        assert not (tmp_path / "features.h5.tmp-merge").exists()
        assert writer.completed_video_ids() == sorted(reference)
        assert not list(writer.parts_dir.glob("*.h5"))
    assert_same_content(read_all(path), reference)


def assert_same_content(got, expected):
    assert sorted(got) == sorted(expected)
    for video_id, (features, times, attrs) in expected.items():
        np.testing.assert_array_equal(got[video_id][0], features)
        np.testing.assert_array_equal(got[video_id][1], times)
        assert got[video_id][2] == attrs


def test_parts_recovered_when_main_never_written(tmp_path):
    path = tmp_path / "features.h5"
    crash_child(path, lambda writer: [write_video(writer, f"v{i}", i, 3) for i in range(3)])
    assert not path.exists()
    with FeatureWriter(path, make_attrs()) as writer:
        assert writer.completed_video_ids() == ["v0", "v1", "v2"]
    assert FeatureStore(path).video_ids == ["v0", "v1", "v2"]


def test_damaged_main_file(tmp_path):
    path = tmp_path / "features.h5"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(FeatureStoreError, match="cannot be opened by HDF5.*overwrite=True"):
        FeatureWriter(path, make_attrs())
    with pytest.raises(FeatureStoreError, match="cannot be opened"):
        FeatureStore(path).video_ids  # noqa: B018
    with FeatureWriter(path, make_attrs(), overwrite=True) as writer:
        write_video(writer, "a", 0, 2)
    assert FeatureStore(path).video_ids == ["a"]


def test_incomplete_group_written_elsewhere_is_redone(tmp_path):
    path = tmp_path / "features.h5"
    with FeatureWriter(path, make_attrs()) as writer:
        write_video(writer, "a", 0, 2)
    with h5py.File(path, "a") as h5file:  # a foreign writer left an incomplete group
        group = h5file.create_group("videos/b")
        group.create_dataset("features", data=np.zeros((1, DIM), np.float16))
        group.create_dataset("times", data=np.zeros(1))
        group.attrs["complete"] = False
    with FeatureStore(path) as store:
        assert store.video_ids == ["a"] and "b" not in store
        with pytest.raises(KeyError, match="'b' incomplete"):
            store.get("b")
    with FeatureWriter(path, make_attrs()) as writer:
        assert writer.completed_video_ids() == ["a"]
        write_video(writer, "b", 1, 3)
    assert read_all(path)["b"][0].shape == (3, DIM)


# ------------------------------------------------------------------ reader in other processes


def test_reader_pickles_and_reopens_after_fork(tmp_path):
    path = tmp_path / "features.h5"
    with FeatureWriter(path, make_attrs()) as writer:
        features, _ = write_video(writer, "a", 0, 4)
    store = FeatureStore(path)
    assert store.video_ids == ["a"]  # opened in the parent
    clone = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(clone.get("a")[0], features.astype(np.float16))

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: uses the parent's object, must reopen its own handle
        try:
            got, _ = store.get("a")
            reopened = store._pid == os.getpid()
            same = np.array_equal(got, features.astype(np.float16))
            os.write(write_fd, b"ok" if reopened and same else b"bad")
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 10) == b"ok"
    os.close(read_fd)
    np.testing.assert_array_equal(store.get("a")[0], features.astype(np.float16))  # parent handle still fine
    store.close()


def test_reader_in_dataloader_workers(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "features.h5"
    with FeatureWriter(path, make_attrs(), dtype="float32") as writer:
        expected = {f"v{i}": write_video(writer, f"v{i}", i, 2 + i)[0] for i in range(4)}
    store = FeatureStore(path)

    class Videos(torch.utils.data.Dataset):
        def __len__(self):
            return len(store)

        def __getitem__(self, index):
            video_id = store.video_ids[index]
            return video_id, torch.from_numpy(store.get(video_id)[0]).sum()

    loader = torch.utils.data.DataLoader(Videos(), batch_size=None, num_workers=2)
    sums = dict(loader)
    assert sums.keys() == expected.keys()
    for video_id, features in expected.items():
        assert float(sums[video_id]) == pytest.approx(features.astype(np.float32).sum(), rel=1e-5)


def test_reader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        FeatureStore(tmp_path / "missing.h5").get("a")


# ------------------------------------------------------------------ shards


def test_shard_path():
    assert str(shard_path("/w/features/features.h5", 1, 4)) == "/w/features/features.rank1-of-4.h5"
    assert str(shard_path("/w/features/features.h5", 0, 1)) == "/w/features/features.h5"
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        shard_path("f.h5", 2, 2)
    with pytest.raises(ValueError, match="world_size"):
        shard_path("f.h5", 0, 0)


def test_assign_shards_by_hand():
    # Longest first: a10 -> r0 (10), b7 -> r1 (7), c5 -> r1 (12), d4 -> r0 (14), e3 -> r1 (15).
    shards = assign_shards(["e", "c", "a", "d", "b"], [3, 5, 10, 4, 7], 2)
    assert shards == [["a", "d"], ["b", "c", "e"]]
    # Equal durations: ids in order, round-robin over the least loaded (lowest rank on ties).
    assert assign_shards(["z", "y", "x", "w"], [1, 1, 1, 1], 3) == [["w", "z"], ["x"], ["y"]]
    assert assign_shards(["a"], [2.0], 3) == [["a"], [], []]
    # Three ranks: 8 -> r0, 7 -> r1, 6 -> r2, 5 -> r2 (11), 4 -> r1 (11), 3 -> r0 (11).
    assert assign_shards(list("abcdef"), [8, 7, 6, 5, 4, 3], 3) == [["a", "f"], ["b", "e"], ["c", "d"]]


def test_assign_shards_errors():
    with pytest.raises(ValueError, match="duplicate video ids"):
        assign_shards(["a", "a"], [1, 2], 2)
    with pytest.raises(ValueError, match="video 'b' has duration nan"):
        assign_shards(["a", "b"], [1, float("nan")], 2)
    with pytest.raises(ValueError, match="2 video ids but 1 durations"):
        assign_shards(["a", "b"], [1], 2)


def test_merge_shards(tmp_path):
    features_h5 = tmp_path / "features.h5"
    paths = [shard_path(features_h5, rank, 2) for rank in range(2)]
    with FeatureWriter(paths[0], make_attrs()) as writer:
        write_video(writer, "a", 0, 3)
        write_video(writer, "c", 2, 2)
    with FeatureWriter(paths[1], make_attrs()) as writer:
        write_video(writer, "b", 1, 4)
        write_video(writer, "c", 2, 2)  # identical duplicate: allowed
    assert merge_shards(paths, features_h5) == ["a", "b", "c"]
    merged = read_all(features_h5)
    expected = {**read_all(paths[0]), **read_all(paths[1])}
    assert_same_content(merged, expected)
    assert FeatureStore(features_h5).attrs["stride"] == 16
    assert not (tmp_path / "features.h5.tmp-merge").exists()


def test_merge_shards_errors(tmp_path):
    first, second, third = tmp_path / "s0.h5", tmp_path / "s1.h5", tmp_path / "s2.h5"
    with FeatureWriter(first, make_attrs()) as writer:
        write_video(writer, "a", 0, 3)
    with FeatureWriter(second, make_attrs()) as writer:
        write_video(writer, "a", 1, 3)  # same id, other values
    with FeatureWriter(third, make_attrs(dim=DIM, backbone="tsn")) as writer:
        pass
    out = tmp_path / "out.h5"
    with pytest.raises(FeatureStoreError, match="video 'a' differs between shards"):
        merge_shards([first, second], out)
    with pytest.raises(FeatureStoreMismatch, match="s2.h5 differs from .*s0.h5: backbone: old='tada2d'"):
        merge_shards([first, third], out)
    assert not out.exists() and not (tmp_path / "out.h5.tmp-merge").exists()
    with pytest.raises(FileNotFoundError, match="s9.h5"):
        merge_shards([first, tmp_path / "s9.h5"], out)
    crash_child(tmp_path / "s3.h5", lambda writer: write_video(writer, "z", 0, 1))
    (tmp_path / "s3.h5").write_bytes(first.read_bytes())  # a main file exists, but parts are pending
    with pytest.raises(FeatureStoreError, match="unconsolidated parts"):
        merge_shards([first, tmp_path / "s3.h5"], out)
