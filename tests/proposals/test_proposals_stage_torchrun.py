"""The bmn stage under torchrun: two CPU processes (DDP over gloo) on the tiny synthetic set."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bmn_stage_helpers import write_synthetic_features
from testkit import tiny_config

from data.dataset import load_dataset
from formats.proposals import load_proposals

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bmn_stage_under_torchrun_two_processes(tmp_path, synthetic_cache):
    work_dir = tmp_path / "work"
    cfg = tiny_config(work_dir, synthetic_cache)
    annotations = load_dataset(cfg)  # also generates the tiny set in the cache, before the two ranks start
    write_synthetic_features(annotations, work_dir / "features" / "features.h5")

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "pipeline.py"), "--config", str(REPO / "configs" / "synthetic-tiny.yaml"),
               "--stage", "bmn",
               f"runtime.work_dir={work_dir}", f"runtime.cache_dir={synthetic_cache}", "runtime.device=cpu",
               "bmn.epochs=2"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    proposals_dir = work_dir / "proposals"
    records = [json.loads(line) for line in (proposals_dir / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2]
    assert all(record["world_size"] == 2 for record in records)
    assert (proposals_dir / "bmn.pt").is_file() and (proposals_dir / "last.pt").is_file()
    validation_videos = set(annotations.subset("validation").videos["video_id"])
    table = load_proposals(proposals_dir / "proposals.json")
    assert set(table["video_id"]) == validation_videos  # both ranks' shares gathered
    assert "AR@100" in result.stderr  # printed by rank 0
    assert (work_dir / "logs" / "bmn.log").is_file()
