"""features.convert: community feature folders -> features.h5, and features.h5 -> .npy + features.json."""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from features.convert import (
    ConvertError,
    ImportSettings,
    estimated_duration,
    export_features,
    grid_times,
    import_features,
    main,
)
from features.extract import run_extract
from features.windows import clip_grid
from formats.feature_writer import FeatureWriter
from formats.features import FeatureStore, check_store, read_root_attrs
from proposals.dataset import BMNInputs, read_videos
from proposals.inputs import rescale_to_fixed_length
from proposals.stage import run_bmn

GRID = dict(fps=30.0, stride=16, num_frames=8, interval=8)  # the paper's HACS clip grid
SETTINGS = ImportSettings(**GRID)


def store_content(path):
    """Everything a features.h5 holds, as comparable plain values: root attrs, and per video the
    features' dtype and bytes, the times' bytes and the video attrs (repr, so NaN equals NaN)."""
    with h5py.File(path, "r") as h5file:
        videos = {}
        for video_id, group in h5file["videos"].items():
            videos[video_id] = (group["features"].dtype.str, group["features"].shape,
                                group["features"][()].tobytes(), group["times"].dtype.str,
                                group["times"][()].tobytes(),
                                {key: repr(np.asarray(value).tolist()) for key, value in group.attrs.items()})
        return read_root_attrs(h5file), videos


def write_store(path, dtype, videos, dim=6):
    """A store as the extract stage writes it: its attrs (config dict, extras), grid times, NaN native fps."""
    attrs = dict(backbone="tada2d", checkpoint_sha256="ab" * 32, short_side=128, dim=dim, crop="none",
                 weights="random", depth=18, width=4, config={"extract": {"fps": 30.0, "videos": ""}, "seed": 0},
                 **GRID)
    with FeatureWriter(path, attrs, dtype=dtype) as writer:
        for video_id, (features, duration, native_fps) in videos.items():
            times = clip_grid(duration, **{"fps": 30.0, "num_frames": 8, "interval_frames": 8,
                                           "stride_frames": 16}).clip_centers_sec
            assert len(times) == len(features)
            writer.begin_video(video_id, duration, native_fps, len(features))
            writer.write_chunk(video_id, 0, features, times)
            writer.finish_video(video_id)
    return path


def random_videos(rng, dim=6):
    # (clips, duration s, native fps): 10.0 s at stride 16/30 fps -> 19 clips; 0.2 s -> 1 clip
    return {"v_long": (rng.standard_normal((19, dim)) * 3, 10.0, 29.97),
            "P01_11": (rng.standard_normal((7, dim)), 3.5, math.nan),
            "one": (rng.standard_normal((1, dim)), 0.2, 25.0)}


# ------------------------------------------------------------------ the clip grid


@pytest.mark.parametrize("duration, fps, num_frames, interval, stride", [
    (10.0, 30.0, 8, 8, 16), (3601.3, 60.0, 8, 8, 8), (0.0, 25.0, 16, 1, 4), (7.77, 29.97, 32, 2, 5)])
def test_grid_times_equal_the_extraction_grid_bit_for_bit(duration, fps, num_frames, interval, stride):
    grid = clip_grid(duration, fps, num_frames, interval, stride)
    times = grid_times(grid.num_clips, fps, num_frames, interval, stride)
    assert times.dtype == np.float64 and times.tobytes() == grid.clip_centers_sec.tobytes()


def test_grid_times_and_duration_by_hand():
    # clip k centre = (16 k + 7 * 8 / 2) / 30 = (16 k + 28) / 30
    np.testing.assert_allclose(grid_times(3, **GRID), [28 / 30, 44 / 30, 60 / 30], rtol=0, atol=1e-15)
    # end of the last clip's last frame: 2.0 + (28 + 1) / 30
    assert estimated_duration(np.array([28 / 30, 44 / 30, 2.0]), 30.0, 8, 8) == pytest.approx(2.0 + 29 / 30)


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_round_trip_h5_npy_h5_is_bit_identical(tmp_path, dtype):
    videos = random_videos(np.random.default_rng(1))
    original = write_store(tmp_path / "features.h5", dtype, videos)
    exported = tmp_path / "export"
    assert export_features(original, exported) == sorted(videos)
    with FeatureStore(original) as store:
        for video_id in videos:
            array = np.load(exported / f"{video_id}.npy")
            assert array.dtype == np.dtype(dtype) and array.shape == (store.video_attrs(video_id)["num_clips"], 6)
            np.testing.assert_array_equal(array.astype(np.float32), store.get(video_id)[0])
    meta = json.loads((exported / "features.json").read_text())
    assert {key: meta[key] for key in ("layout", "dtype", "fps", "stride", "num_frames", "interval", "dim")} == \
        {"layout": "TC", "dtype": dtype, **GRID, "dim": 6}
    assert meta["videos"]["P01_11"]["native_fps"] is None  # NaN: JSON null
    imported = tmp_path / "again.h5"
    assert import_features(exported, imported) == sorted(videos)
    assert store_content(imported) == store_content(original)


def test_round_trip_of_an_extracted_store(tmp_path, make_run, tiny_videos):
    listed = tmp_path / "videos.txt"
    listed.write_text("".join(f"{path}\n" for path in tiny_videos["path"][:3]))
    cfg, paths = make_run(tmp_path / "work", f"extract.videos={listed}")
    run_extract(cfg, paths)
    export_features(paths.features_h5, tmp_path / "export")
    import_features(tmp_path / "export", tmp_path / "features.h5")
    assert store_content(tmp_path / "features.h5") == store_content(paths.features_h5)
    assert check_store(tmp_path / "features.h5") == ""


def test_export_refuses_to_overwrite_unless_told(tmp_path):
    original = write_store(tmp_path / "features.h5", "float16", random_videos(np.random.default_rng(2)))
    export_features(original, tmp_path / "export")
    with pytest.raises(ConvertError, match="features.json exists; pass --overwrite"):
        export_features(original, tmp_path / "export")
    export_features(original, tmp_path / "export", overwrite=True)


def test_an_export_missing_a_video_file_is_one_line_naming_it(tmp_path):
    original = write_store(tmp_path / "features.h5", "float16", random_videos(np.random.default_rng(5)))
    export_features(original, tmp_path / "export")
    (tmp_path / "export" / "P01_11.npy").unlink()
    with pytest.raises(ConvertError) as info:
        import_features(tmp_path / "export", tmp_path / "again.h5")
    assert str(info.value) == (f"{tmp_path / 'export' / 'P01_11.npy'}: missing: "
                               f"{tmp_path / 'export' / 'features.json'} lists video 'P01_11'")
    assert not (tmp_path / "again.h5").exists()


# ------------------------------------------------------------------ import of community features


def community_folder(folder, arrays, layout="TC"):
    """One file per video in the formats the toolkits use (.npy, .pt, .pkl, .npz)."""
    folder.mkdir()
    writers = [lambda path, a: np.save(path.with_suffix(".npy"), a),
               lambda path, a: torch.save(torch.from_numpy(a), path.with_suffix(".pt")),
               lambda path, a: path.with_suffix(".pkl").write_bytes(pickle.dumps({"feats": a})),
               lambda path, a: np.savez(path.with_suffix(".npz"), feats=a)]
    for index, (video_id, array) in enumerate(arrays.items()):
        writers[index % len(writers)](folder / video_id, array if layout == "TC" else array.T)
    return folder


def reference_sha256(arrays):
    digest = hashlib.sha256()
    for video_id in sorted(arrays):
        array = np.ascontiguousarray(arrays[video_id])
        digest.update(f"{video_id}|{array.dtype.str}|{list(array.shape)}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("layout", ["TC", "CT"])
def test_import_of_npy_pt_pkl_npz_folders(tmp_path, layout):
    rng = np.random.default_rng(3)
    arrays = {f"video_{index}": rng.standard_normal((length, 5)).astype(np.float32)
              for index, length in enumerate([12, 1, 30, 7, 3])}
    folder = community_folder(tmp_path / "i3d_features", arrays, layout)
    out = tmp_path / "features.h5"
    settings = ImportSettings(**GRID, layout=layout)
    assert import_features(folder, out, settings) == sorted(arrays)
    with FeatureStore(out) as store:
        attrs = store.attrs
        assert {key: attrs[key] for key in ("backbone", "checkpoint_sha256", "short_side", "dim", "dtype",
                                            "imported_layout", "fps", "stride", "num_frames", "interval")} == \
            {"backbone": "imported:i3d_features", "checkpoint_sha256": "", "short_side": 1, "dim": 5,
             "dtype": "float32", "imported_layout": layout, **GRID}
        assert attrs["imported_sha256"] == reference_sha256(arrays)
        assert attrs["config"]["import"]["layout"] == layout
        for video_id, array in arrays.items():
            features, times = store.get(video_id)
            np.testing.assert_array_equal(features, array)
            np.testing.assert_array_equal(times, (16 * np.arange(len(array)) + 28) / 30)
            video = store.video_attrs(video_id)
            assert video["duration"] == pytest.approx(times[-1] + 29 / 30)
            assert math.isnan(video["native_fps"]) and video["complete"]


def test_import_with_explicit_times_durations_and_float16(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float64).reshape(4, 3), "b": np.ones((2, 3), np.float32)}
    folder = community_folder(tmp_path / "feats", arrays)
    times = {"a": [0.5, 1.0, 2.0, 4.0], "b": [0.25, 0.75]}
    (tmp_path / "times.json").write_text(json.dumps(times))
    pd.DataFrame({"video_id": ["b", "a", "unused"], "duration": [1.0, 4.5, 9.0],
                  "fps": [25.0, 59.94, 30.0]}).to_csv(tmp_path / "video_info.csv", index=False)
    settings = ImportSettings(**GRID, dtype="float16", times_json=str(tmp_path / "times.json"),
                              durations_file=str(tmp_path / "video_info.csv"), backbone="i3d_rgb", short_side=224)
    import_features(folder, tmp_path / "features.h5", settings)
    with FeatureStore(tmp_path / "features.h5") as store:
        assert (store.attrs["backbone"], store.attrs["short_side"], store.attrs["dtype"]) == ("i3d_rgb", 224,
                                                                                              "float16")
        for video_id in arrays:
            features, stored_times = store.get(video_id)
            np.testing.assert_array_equal(features, arrays[video_id].astype(np.float16).astype(np.float32))
            np.testing.assert_array_equal(stored_times, times[video_id])
        assert store.video_attrs("a")["duration"] == 4.5 and store.video_attrs("a")["native_fps"] == 59.94
    (tmp_path / "durations.json").write_text(json.dumps({"database": {"a": {"duration": 8.0}, "b": {"duration": 2}}}))
    settings = ImportSettings(**GRID, durations_file=str(tmp_path / "durations.json"))
    import_features(folder, tmp_path / "other.h5", settings)
    with FeatureStore(tmp_path / "other.h5") as store:
        assert [store.video_attrs(v)["duration"] for v in ("a", "b")] == [8.0, 2.0]


def test_the_bmn_inputs_read_an_imported_store(tmp_path):
    rng = np.random.default_rng(4)
    arrays = {"x": rng.standard_normal((40, 4)).astype(np.float32), "y": rng.standard_normal((9, 4)).astype(np.float32)}
    out = tmp_path / "features.h5"
    import_features(community_folder(tmp_path / "feats", arrays), out, SETTINGS)
    segments = pd.DataFrame({"video_id": ["x", "y"], "start": [2.0, 1.0], "end": [9.0, 3.0]})
    videos = read_videos(out, ["x", "y"], segments, "rescale", 16)
    for video, video_id in zip(videos, ["x", "y"]):
        times = grid_times(len(arrays[video_id]), **GRID)
        duration = estimated_duration(times, 30.0, 8, 8)
        assert video.duration_sec == duration
        np.testing.assert_allclose(video.features, rescale_to_fixed_length(arrays[video_id], times, duration, 16),
                                   rtol=0, atol=1e-6)
    item = BMNInputs(out, read_videos(out, ["x"], segments, "windows", 16), "windows", 16)[0]
    assert item[0].shape == (4, 16)  # (C, T)
    np.testing.assert_array_equal(item[0], arrays["x"][:16].T)


def test_the_bmn_stage_runs_on_community_features(tmp_path, make_run, tiny_videos):
    """Entering at the bmn stage: features extracted, exported, stripped of our JSON (as a community
    folder would come), imported with the user's grid and durations, then proposals for every video."""
    cfg, paths = make_run(tmp_path / "work")
    run_extract(cfg, paths)
    export_features(paths.features_h5, tmp_path / "community")
    (tmp_path / "community" / "features.json").unlink()
    tiny_videos[["video_id", "duration", "fps"]].to_csv(tmp_path / "video_info.csv", index=False)
    shutil.rmtree(paths.features_dir)
    assert main(["import", str(tmp_path / "community"), str(paths.features_h5), "--fps", "30", "--stride", "8",
                 "--num-frames", "4", "--interval", "4", "--dtype", "float16",
                 "--durations", str(tmp_path / "video_info.csv")]) == 0
    with FeatureStore(paths.features_h5) as store:
        assert store.video_ids == sorted(tiny_videos["video_id"])
    threads = torch.get_num_threads()
    try:
        run_bmn(cfg, paths)
    finally:
        torch.set_num_threads(threads)  # the stage sets the config's thread count
    proposals = json.loads(paths.proposals_json.read_text())["results"]
    evaluated = tiny_videos[tiny_videos["subset"] == cfg.eval.subset]["video_id"]
    assert sorted(proposals) == sorted(evaluated) and all(proposals.values())


# ------------------------------------------------------------------ bad input: one line naming the file


def bad_case(tmp_path, case):
    """A folder of good files plus the defect ``case``; returns (folder, settings, the file to be named)."""
    folder = community_folder(tmp_path / "feats", {"good": np.ones((4, 3), np.float32)})
    settings = SETTINGS
    if case == "dim":
        np.save(folder / "wide.npy", np.ones((4, 5), np.float32))
        return folder, settings, folder / "wide.npy"
    if case == "nan":
        array = np.ones((4, 3), np.float32)
        array[2, 1] = np.nan
        np.save(folder / "nan.npy", array)
        return folder, settings, folder / "nan.npy"
    if case == "empty":
        np.save(folder / "empty.npy", np.zeros((0, 3), np.float32))
        return folder, settings, folder / "empty.npy"
    if case == "1-D":
        torch.save(torch.ones(3), folder / "flat.pt")
        return folder, settings, folder / "flat.pt"
    if case == "garbage":
        (folder / "broken.npy").write_bytes(b"\x93NUMPY not really")
        return folder, settings, folder / "broken.npy"
    if case == "strings":
        (folder / "words.pkl").write_bytes(pickle.dumps(np.array([["a", "b"]])))
        return folder, settings, folder / "words.pkl"
    if case == "several arrays":
        np.savez(folder / "multi.npz", rgb=np.ones((4, 3)), flow=np.ones((4, 3)))
        return folder, settings, folder / "multi.npz"
    if case == "float16 range":
        np.save(folder / "huge.npy", np.full((2, 3), 1e6, np.float32))
        return folder, ImportSettings(**GRID, dtype="float16"), folder / "huge.npy"
    if case == "duplicate id":
        torch.save(torch.ones(4, 3), folder / "good.pt")
        return folder, settings, folder / "good.pt"
    times = tmp_path / "times.json"
    if case == "missing video":
        times.write_text(json.dumps({"good": [0.5, 1, 1.5, 2], "absent": [1.0]}))
        return folder, ImportSettings(**GRID, times_json=str(times)), folder / "absent.npy"
    if case == "times length":
        times.write_text(json.dumps({"good": [0.5, 1.0]}))
        return folder, ImportSettings(**GRID, times_json=str(times)), folder / "good.npy"
    if case == "missing duration":
        (tmp_path / "d.csv").write_text("video_id,duration\nother,3.0\n")
        return folder, ImportSettings(**GRID, durations_file=str(tmp_path / "d.csv")), folder / "good.npy"
    raise AssertionError(case)


@pytest.mark.parametrize("case, why", [
    ("dim", "feature dim 5"), ("nan", "1 NaN or inf values .first at clip 2, channel 1"), ("empty", "empty array"),
    ("1-D", "must be a 2-D array"), ("garbage", "cannot load it"), ("strings", "not a real number type"),
    ("several arrays", "holds several arrays"), ("float16 range", "beyond the float16 range"),
    ("duplicate id", "also has"), ("missing video", "missing: .*lists video 'absent'"),
    ("times length", "4 feature rows but 2 times"), ("missing duration", "no duration for video 'good'"),
])
def test_bad_inputs_are_one_line_naming_the_file_and_write_nothing(tmp_path, case, why):
    folder, settings, named = bad_case(tmp_path, case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ConvertError, match=why) as info:
        import_features(folder, out_dir / "features.h5", settings)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(named)), message
    assert list(out_dir.iterdir()) == []  # no store, no temporary, no writer side files


def test_a_failed_import_leaves_an_existing_store_in_place(tmp_path):
    folder = community_folder(tmp_path / "feats", {"good": np.ones((4, 3), np.float32)})
    out = tmp_path / "features.h5"
    import_features(folder, out, SETTINGS)
    before = store_content(out)
    with pytest.raises(ConvertError, match="exists; pass --overwrite"):
        import_features(folder, out, SETTINGS)
    np.save(folder / "nan.npy", np.full((2, 3), np.nan, np.float32))
    with pytest.raises(ConvertError, match="NaN"):
        import_features(folder, out, SETTINGS, overwrite=True)
    assert store_content(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["feats", "features.h5"]


def test_command_line(tmp_path, capsys):
    folder = community_folder(tmp_path / "feats", {"a": np.ones((3, 2), np.float32), "b": np.zeros((5, 2))})
    out = tmp_path / "features.h5"
    assert main(["import", str(folder), str(out), "--fps", "30", "--stride", "16", "--num-frames", "8",
                 "--interval", "8", "--layout", "TC"]) == 0
    assert capsys.readouterr().out.strip() == f"convert: 2 videos from {folder} -> {out}"
    assert main(["export", str(out), str(tmp_path / "export")]) == 0
    assert main(["import", str(tmp_path / "export"), str(tmp_path / "again.h5")]) == 0
    assert store_content(tmp_path / "again.h5") == store_content(out)
    capsys.readouterr()
    # Errors: one line on stderr, exit 1.
    assert main(["import", str(folder), str(tmp_path / "x.h5"), "--fps", "30"]) == 1
    assert capsys.readouterr().err == f"convert: import {folder}: also give --stride --num-frames\n"
    assert main(["import", str(tmp_path / "export"), str(tmp_path / "y.h5"), "--fps", "30"]) == 1
    assert "holds the settings of this folder" in capsys.readouterr().err
    np.save(folder / "c.npy", np.ones((3, 7), np.float32))
    assert main(["import", str(folder), str(tmp_path / "z.h5"), "--fps", "30", "--stride", "1",
                 "--num-frames", "1"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(folder / "c.npy") in error
