"""SIGKILL in the middle of each stage, then the same command again: it finishes, and the result
equals that of an uninterrupted run (bit for bit where the stage is deterministic)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from testkit import REPO_ROOT

pytestmark = pytest.mark.slow

STAGES = ("finetune", "extract", "bmn", "classify", "eval")
# (stage, file whose appearance means the stage is under way): the kill comes right after it
PROGRESS_MARKERS = {
    "finetune": "backbone/last.pt",
    "extract": "features/features.h5.parts",
    "bmn": "proposals/last.pt",
    "classify": "detections",
    "eval": "eval",
}
OUTPUT_DIRS = {"finetune": "backbone", "extract": "features", "bmn": "proposals", "classify": "detections",
               "eval": "eval"}
OVERRIDES = ("finetune.epochs=3", "bmn.epochs=3", "runtime.num_workers=0")


def command(work_dir: Path, cache_dir: Path, stage: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "pipeline.py"), "--config", str(REPO_ROOT / "configs/synthetic-tiny.yaml"),
            "--stage", stage, f"runtime.work_dir={work_dir}", f"runtime.cache_dir={cache_dir}", *OVERRIDES]


def run(work_dir, cache_dir, stage):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command(work_dir, cache_dir, stage), capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"


def kill_when_started(work_dir, cache_dir, stage, marker):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command(work_dir, cache_dir, stage), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and not (work_dir / marker).exists():
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the stage and its DataLoader workers
    process.wait()


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, synthetic_cache):
    work_dir = tmp_path_factory.mktemp("clean") / "work"
    for stage in STAGES:
        run(work_dir, synthetic_cache, stage)
    return work_dir


def _same_state_dicts(a: Path, b: Path) -> bool:
    first, second = (torch.load(p, map_location="cpu", weights_only=True)["model"] for p in (a, b))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _same_features(a: Path, b: Path) -> bool:
    with h5py.File(a, "r") as first, h5py.File(b, "r") as second:
        if sorted(first["videos"]) != sorted(second["videos"]):
            return False
        return all(np.array_equal(first["videos"][v]["features"][()], second["videos"][v]["features"][()])
                   for v in first["videos"])


def _json(path: Path):
    return json.loads(path.read_text())


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_mid_stage_then_rerun(stage, clean_run, tmp_path, synthetic_cache):
    work_dir = tmp_path / "work"
    for earlier in STAGES[:STAGES.index(stage)]:  # this stage's inputs, as the clean run made them
        shutil.copytree(clean_run / OUTPUT_DIRS[earlier], work_dir / OUTPUT_DIRS[earlier])
    kill_when_started(work_dir, synthetic_cache, stage, PROGRESS_MARKERS[stage])
    run(work_dir, synthetic_cache, stage)

    if stage == "finetune":
        assert _same_state_dicts(clean_run / "backbone/last.pt", work_dir / "backbone/last.pt")
        assert (clean_run / "backbone/metrics.jsonl").read_text().count("\n") == \
            (work_dir / "backbone/metrics.jsonl").read_text().count("\n")
    elif stage == "extract":
        assert _same_features(clean_run / "features/features.h5", work_dir / "features/features.h5")
    elif stage == "bmn":
        assert _same_state_dicts(clean_run / "proposals/last.pt", work_dir / "proposals/last.pt")
        assert _json(clean_run / "proposals/proposals.json") == _json(work_dir / "proposals/proposals.json")
    elif stage == "classify":
        assert _json(clean_run / "detections/submission.json") == _json(work_dir / "detections/submission.json")
    else:
        assert _json(clean_run / "eval/metrics.json") == _json(work_dir / "eval/metrics.json")
    leftovers = [p for p in work_dir.rglob("*") if p.name.endswith((".tmp", ".tmp-merge"))]
    assert not leftovers, leftovers
