"""Every stage on the tiny synthetic set, through the command line a user runs."""

import json
import subprocess
import sys
import time

import pytest
from testkit import REPO_ROOT

pytestmark = pytest.mark.slow


def run_pipeline(work_dir, cache_dir, *args, timeout=600):
    command = [sys.executable, str(REPO_ROOT / "pipeline.py"), "--config",
               str(REPO_ROOT / "configs" / "synthetic-tiny.yaml"), *args,
               f"runtime.work_dir={work_dir}", f"runtime.cache_dir={cache_dir}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={"OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin", **_python_env()})


def _python_env():
    import os

    return {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "HOME", "PATH", "LD_"))}


def test_all_stages_then_nothing_to_do(tmp_path, synthetic_cache):
    work_dir = tmp_path / "work"
    result = run_pipeline(work_dir, synthetic_cache, "--stage", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    for relative in ("config.yaml", "backbone/checkpoint.pt", "features/features.h5", "proposals/proposals.json",
                     "detections/submission.json", "eval/metrics.json", "eval/report.md",
                     "logs/finetune.log", "logs/extract.log", "logs/bmn.log", "logs/classify.log", "logs/eval.log"):
        assert (work_dir / relative).is_file(), relative
    metrics = json.loads((work_dir / "eval" / "metrics.json").read_text())
    for task in ("verb", "noun", "action"):
        assert len(metrics[task]["mAP"]) == 5 and 0.0 <= metrics[task]["average_mAP"] <= 1.0
    assert 0.0 < metrics["proposals"]["AR@100"] <= 1.0
    submission = json.loads((work_dir / "detections" / "submission.json").read_text())
    assert submission["version"] == "0.2" and submission["challenge"] == "action_detection"
    # the closing table names the results and the files
    assert "average mAP" in result.stdout and "AR@100" in result.stdout and "timings" in result.stdout

    # a second run finds every stage complete
    started = time.perf_counter()
    again = run_pipeline(work_dir, synthetic_cache, "--stage", "all")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("nothing to do") + again.stderr.count("complete") >= 5, again.stderr
    assert time.perf_counter() - started < 60
