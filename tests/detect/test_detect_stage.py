"""Detection on anyone's videos with a trained run: the four outputs, the same answers as the pipeline,
a bundle that travels, a leaderboard test split from a labelless file. Real subprocesses, tiny run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from testkit import REPO_ROOT

from data.mp4 import write_mp4
from formats.detections import read_detections_csv
from formats.failures import read_failures

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def detect(*arguments: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "pipeline.py"), "--stage", "detect", *arguments],
                          capture_output=True, text=True, timeout=600, env=ENV, cwd=cwd)


def run_config(run: Path) -> Path:
    return run / "config.yaml"


def validation_videos(run: Path) -> dict[str, str]:
    """video id -> file of the run's validation subset (the paths the dataset resolved)."""
    from configs.load import load_config
    from data.dataset import load_dataset

    videos = load_dataset(load_config(run_config(run))).subset("validation").videos
    return dict(zip(videos["video_id"], videos["path"]))


def keyed(entries: list[dict]) -> dict[tuple, float]:
    """EK100 entries -> {(start, end, verb, noun): score}: order-free (near-equal scores may swap)."""
    return {(round(e["segment"][0], 6), round(e["segment"][1], 6), e["verb"], e["noun"]): e["score"]
            for e in entries}


def assert_same_detections(got: dict[str, list[dict]], expected: dict[str, list[dict]]) -> None:
    assert sorted(got) == sorted(expected)
    for video_id in expected:
        got_video, expected_video = keyed(got[video_id]), keyed(expected[video_id])
        assert got_video.keys() == expected_video.keys(), video_id
        np.testing.assert_allclose([got_video[k] for k in expected_video], list(expected_video.values()),
                                   rtol=1e-6, atol=1e-9, err_msg=video_id)


def new_videos(folder: Path) -> list[Path]:
    """Two new videos nobody annotated (moving squares on noise, 32 px, 30 fps) and one broken file."""
    rng = np.random.default_rng(5)
    paths = []
    for index, seconds in enumerate((6.0, 4.5)):
        frames = []
        for t in range(int(seconds * 30)):
            frame = rng.integers(0, 40, size=(32, 32, 3), dtype=np.uint8)
            x = (t * (index + 1)) % 24
            frame[10:18, x:x + 8] = (220, 40 + 60 * index, 40)
            frames.append(frame)
        paths.append(write_mp4(folder / f"street_{index}.mp4", frames, 30.0, keyframe_interval=15))
    broken = folder / "broken.mp4"
    broken.write_bytes(os.urandom(20000))
    return [*paths, broken]


def test_detect_on_new_videos_writes_the_four_files_and_lists_the_broken_one(tmp_path, trained_tiny_run):
    folder = tmp_path / "my videos"
    new_videos(folder)
    out = tmp_path / "out"
    result = detect("--config", str(run_config(trained_tiny_run)), f"detect.videos={folder}",
                    f"detect.output={out}", "detect.score_threshold=0.001", "detect.top_k=20")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "detect: 1 of 3 videos failed" in result.stderr and "Traceback" not in result.stderr
    assert [failure.video_id for failure in read_failures(out / "failed.tsv")] == ["broken"]
    submission = json.loads((out / "detections.json").read_text())
    assert submission["challenge"] == "action_detection" and sorted(submission["results"]) == ["street_0",
                                                                                                "street_1"]
    for entries in submission["results"].values():
        assert 0 < len(entries) <= 20 and all(entry["score"] >= 0.001 for entry in entries)
    rows = read_detections_csv(out / "detections.csv")
    assert len(rows) == sum(len(entries) for entries in submission["results"].values())
    assert list(rows[0]) == ["video_id", "start_sec", "end_sec", "verb_id", "verb", "noun_id", "noun", "action",
                             "action_name", "score"]
    order = [(row["video_id"], -row["score"]) for row in rows]
    assert order == sorted(order)  # by video, then best first
    page = (out / "viewer.html").read_text()
    assert "street_0" in page and "my%20videos/street_0.mp4" in page or "street_0.mp4" in page

    # a rerun resumes per video: the two done are not redone, the broken one is tried again
    result = detect("--config", str(run_config(trained_tiny_run)), f"detect.videos={folder}",
                    f"detect.output={out}", "detect.score_threshold=0.001", "detect.top_k=20")
    assert "2 of 2 videos already done" in result.stderr and result.returncode == 1


def test_detect_gives_the_pipelines_answers_and_the_bundle_travels(tmp_path, trained_tiny_run):
    videos = validation_videos(trained_tiny_run)
    listing = tmp_path / "videos.txt"
    listing.write_text("".join(f"{path}\n" for path in videos.values()))  # plain paths, no annotations
    out = tmp_path / "out"
    result = detect("--config", str(run_config(trained_tiny_run)), f"detect.videos={listing}",
                    f"detect.output={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    pipeline_results = json.loads((trained_tiny_run / "detections" / "submission.json").read_text())["results"]
    detected = json.loads((out / "detections.json").read_text())
    assert_same_detections(detected["results"], pipeline_results)

    # export, then detect on a fresh folder with no config file: the same detections
    export = subprocess.run([sys.executable, str(REPO_ROOT / "pipeline.py"), "--config",
                             str(run_config(trained_tiny_run)), "--stage", "export"], capture_output=True,
                            text=True, timeout=600, env=ENV)
    assert export.returncode == 0, export.stderr[-3000:]
    elsewhere = tmp_path / "another machine"
    elsewhere.mkdir()
    shutil.copy(trained_tiny_run / "export" / "model.pt", elsewhere / "model.pt")
    result = detect(f"detect.model={elsewhere / 'model.pt'}", f"detect.videos={listing}", cwd=elsewhere)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((elsewhere / "detect" / "detections.json").read_text()) == detected


def test_a_labelless_test_split_gives_the_file_to_upload(tmp_path, trained_tiny_run):
    """EK100 style: a test-timestamps file (video ids and times, no verb/noun) names the split's videos."""
    cache = Path(yaml.safe_load(run_config(trained_tiny_run).read_text())["runtime"]["cache_dir"])
    [dataset_dir] = list((cache / "synthetic").glob("synthetic-ek100-*"))
    videos = validation_videos(trained_tiny_run)
    test_csv = tmp_path / "EPIC_100_test_timestamps.csv"
    test_csv.write_text("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
                        "start_frame,stop_frame\n" + "".join(
                            f"{v}_0,{v[:3]},{v},00:00:01.00,00:00:01.00,00:00:02.00,30,60\n" for v in videos))
    out = tmp_path / "out"
    result = detect("--config", str(run_config(trained_tiny_run)), "detect.subset=testing", f"detect.output={out}",
                    "dataset.source=files", f"dataset.annotations={{testing: {test_csv}}}", "dataset.subsets=[testing]",
                    f"dataset.video_dir={dataset_dir / 'videos'}", "dataset.video_pattern={participant}/{video_id}.mp4",
                    f"dataset.verb_classes={dataset_dir / 'EPIC_100_verb_classes.csv'}",
                    f"dataset.noun_classes={dataset_dir / 'EPIC_100_noun_classes.csv'}",
                    f"dataset.video_info={dataset_dir / 'EPIC_100_video_info.csv'}", "classify.sls_pt=4")
    assert result.returncode == 0, result.stderr[-3000:]
    submission = json.loads((out / "detections.json").read_text())
    assert submission["sls_pt"] == 4 and sorted(submission["results"]) == sorted(videos)
    pipeline_results = json.loads((trained_tiny_run / "detections" / "submission.json").read_text())["results"]
    assert_same_detections(submission["results"], pipeline_results)
