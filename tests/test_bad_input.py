"""Bad input end to end: broken videos, a malformed annotation line, a wrong config value.

Each is named in one clear line; nothing finished is lost; the healthy videos get their detections.
"""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from testkit import REPO_ROOT, tiny_config

from data.dataset import load_dataset
from data.synthetic import dataset_dir

pytestmark = pytest.mark.slow


def run(*args):
    command = [sys.executable, str(REPO_ROOT / "pipeline.py"), "--config",
               str(REPO_ROOT / "configs/synthetic-tiny.yaml"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture()
def user_data(tmp_path, synthetic_cache):
    """The tiny synthetic set copied as a user's own files (EK100 CSVs + videos)."""
    cfg = tiny_config(tmp_path / "unused", synthetic_cache)
    load_dataset(cfg)
    root = tmp_path / "data"
    shutil.copytree(dataset_dir(cfg.dataset.synthetic, synthetic_cache / "synthetic"), root)
    return root


def files_overrides(root, work_dir, train_csv="EPIC_100_train.csv"):
    return [f"runtime.work_dir={work_dir}", "dataset.source=files",
            f"dataset.annotations={{training: {root / train_csv}, validation: {root / 'EPIC_100_validation.csv'}}}",
            f"dataset.verb_classes={root / 'EPIC_100_verb_classes.csv'}",
            f"dataset.noun_classes={root / 'EPIC_100_noun_classes.csv'}",
            f"dataset.video_info={root / 'EPIC_100_video_info.csv'}",
            f"dataset.video_dir={root / 'videos'}", "dataset.video_pattern={participant}/{video_id}.mp4"]


def test_broken_videos_are_named_and_the_rest_get_detections(user_data, tmp_path):
    validation = pd.read_csv(user_data / "EPIC_100_validation.csv")
    training = pd.read_csv(user_data / "EPIC_100_train.csv")
    broken_val, broken_train = validation.video_id.iloc[0], training.video_id.iloc[0]
    (user_data / "videos" / broken_val.split("_")[0] / f"{broken_val}.mp4").write_bytes(os.urandom(3000))
    (user_data / "videos" / broken_train.split("_")[0] / f"{broken_train}.mp4").write_bytes(b"")
    work_dir = tmp_path / "work"

    result = run("--stage", "all", *files_overrides(user_data, work_dir))
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert any(line.startswith("stage extract: 2 of") and "failed.tsv" in line for line in lines), result.stderr
    failed = pd.read_csv(work_dir / "features/failed.tsv", sep="\t")
    assert set(failed.video_id) == {broken_val, broken_train}
    assert all(isinstance(reason, str) and reason for reason in failed.reason)
    submission = json.loads((work_dir / "detections/submission.json").read_text())
    healthy = set(validation.video_id) - {broken_val}
    assert healthy <= set(submission["results"]) and broken_val not in submission["results"]
    assert (work_dir / "eval/metrics.json").is_file()


def test_malformed_annotation_line_is_named(user_data, tmp_path):
    lines = (user_data / "EPIC_100_train.csv").read_text().splitlines()
    fields = lines[3].split(",")
    fields[4] = "00:00:xx.00"  # start_timestamp of the third segment
    lines[3] = ",".join(fields)
    (user_data / "bad_train.csv").write_text("\n".join(lines) + "\n")
    work_dir = tmp_path / "work"
    result = run("--stage", "finetune", *files_overrides(user_data, work_dir, train_csv="bad_train.csv"))
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()[-1]
    assert "bad_train.csv" in message and "row 4" in message and "start_timestamp" in message
    assert not (work_dir / "backbone").exists()


def test_wrong_config_value_is_named_before_any_work(user_data, tmp_path):
    work_dir = tmp_path / "work"
    result = run("--stage", "all", *files_overrides(user_data, work_dir), "extract.stride=0")
    assert result.returncode == 2
    assert result.stderr.strip() == "config error: extract.stride: must be >= 1"
    assert not work_dir.exists()
