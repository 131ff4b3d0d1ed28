"""Run state a user can trust, with real processes: locks, verified completion, damaged outputs,
divergence, and the edges of the machine (a full disk, a read-only work dir).

Every test drives ``pipeline.py`` in subprocesses on the tiny synthetic set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import pytest
import torch
from testkit import REPO_ROOT

pytestmark = pytest.mark.slow

STAGES = ("finetune", "extract", "bmn", "classify", "eval")
STAGE_DIRS = {"finetune": "backbone", "extract": "features", "bmn": "proposals", "classify": "detections",
              "eval": "eval"}
OVERRIDES = ("finetune.epochs=2", "bmn.epochs=2", "runtime.num_workers=0")  # = conftest.TINY_RUN_OVERRIDES
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def command(work_dir: Path, cache_dir: Path, stage: str, *extra: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "pipeline.py"), "--config", str(REPO_ROOT / "configs/synthetic-tiny.yaml"),
            "--stage", stage, f"runtime.work_dir={work_dir}", f"runtime.cache_dir={cache_dir}", *OVERRIDES, *extra]


def run(work_dir: Path, cache_dir: Path, stage: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(work_dir, cache_dir, stage, *extra), capture_output=True, text=True,
                          timeout=600, env=ENV)


def run_ok(work_dir: Path, cache_dir: Path, stage: str, *extra: str) -> subprocess.CompletedProcess:
    result = run(work_dir, cache_dir, stage, *extra)
    assert result.returncode == 0, f"{stage}: {result.stderr[-3000:]}"
    return result


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The lines of stderr that are not log records (log lines start with a HH:MM:SS time)."""
    return [line for line in result.stderr.splitlines() if line and not line[:8].replace(":", "").isdigit()]


def history(path: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def holder_pid(lock_file: Path) -> int | None:
    try:
        return json.loads(lock_file.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_second_run_of_a_running_stage_is_refused_and_the_first_is_unharmed(tmp_path, synthetic_cache,
                                                                                trained_tiny_run):
    work_dir = tmp_path / "work"
    for stage in STAGES:
        lock_file = work_dir / "locks" / f"{stage}.lock"
        first = subprocess.Popen(command(work_dir, synthetic_cache, stage), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
        deadline = time.time() + 300
        while holder_pid(lock_file) != first.pid and first.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        assert holder_pid(lock_file) == first.pid, f"{stage}: the first run never held its lock"
        os.killpg(first.pid, signal.SIGSTOP)  # frozen while it holds the lock, mid-stage
        try:
            second = run(work_dir, synthetic_cache, stage)
        finally:
            os.killpg(first.pid, signal.SIGCONT)
        assert second.returncode == 4
        [line] = error_lines(second)
        assert f"stage {stage}" in line and str(lock_file) in line and f"pid {first.pid}" in line, line
        _, first_stderr = first.communicate(timeout=600)
        assert first.returncode == 0, f"{stage}: {first_stderr[-3000:]}"
    assert history(work_dir / "backbone" / "metrics.jsonl") == [1, 2]
    assert history(work_dir / "proposals" / "metrics.jsonl") == [1, 2]
    assert (json.loads((work_dir / "eval" / "metrics.json").read_text())
            == json.loads((trained_tiny_run / "eval" / "metrics.json").read_text()))


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, synthetic_cache):
    work_dir = tmp_path / "work"
    lock_file = work_dir / "locks" / "finetune.lock"
    first = subprocess.Popen(command(work_dir, synthetic_cache, "finetune"), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    deadline = time.time() + 300
    while holder_pid(lock_file) != first.pid and first.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert holder_pid(lock_file) == first.pid  # the file still names the dead holder
    result = run_ok(work_dir, synthetic_cache, "finetune")
    assert f"taking over the stale lock {lock_file}" in result.stderr and f"pid {first.pid}" in result.stderr


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_outputs_are_detected_and_redone(tmp_path, synthetic_cache, trained_tiny_run):
    work_dir = tmp_path / "work"
    run_ok(work_dir, synthetic_cache, "all")
    proposals_before = (work_dir / "proposals" / "proposals.json").read_text()

    # a truncated proposals file: inference is redone, training is not
    proposals = work_dir / "proposals" / "proposals.json"
    truncate(proposals)
    result = run_ok(work_dir, synthetic_cache, "bmn")
    assert f"output {proposals} is damaged" in result.stderr and "resuming from" in result.stderr
    assert proposals.read_text() == proposals_before

    # a truncated checkpoint: finetune says so and trains again (the best epoch's weights were lost)
    checkpoint = work_dir / "backbone" / "checkpoint.pt"
    truncate(checkpoint)
    result = run_ok(work_dir, synthetic_cache, "finetune")
    assert f"output {checkpoint} is damaged" in result.stderr
    assert history(work_dir / "backbone" / "metrics.jsonl") == [1, 2]
    redone, reference = (torch.load(path, weights_only=True)["model"]
                         for path in (checkpoint, trained_tiny_run / "backbone" / "checkpoint.pt"))
    assert all(torch.equal(redone[key], reference[key]) for key in reference)

    # a truncated feature store: moved aside, every video extracted again (the checkpoint redone above has
    # the same bytes, so extract was still complete until now)
    features = work_dir / "features" / "features.h5"
    truncate(features)
    result = run_ok(work_dir, synthetic_cache, "extract")
    assert f"output {features} is damaged" in result.stderr and "moved aside" in result.stderr
    with h5py.File(features, "r") as h5file, h5py.File(trained_tiny_run / "features/features.h5", "r") as reference:
        assert sorted(h5file["videos"]) == sorted(reference["videos"])
        for video_id in reference["videos"]:
            assert (h5file[f"videos/{video_id}/features"][()] == reference[f"videos/{video_id}/features"][()]).all()


def test_overwrite_starts_afresh_whatever_the_state_of_the_store(tmp_path, synthetic_cache, trained_tiny_run):
    work_dir = tmp_path / "work"
    run_ok(work_dir, synthetic_cache, "finetune")
    features = work_dir / "features" / "features.h5"
    features.parent.mkdir(parents=True)
    features.write_bytes(os.urandom(4096))  # not HDF5 at all
    parts = features.with_name("features.h5.parts")
    parts.mkdir()
    (parts / "junk.h5").write_bytes(b"junk")  # a part that is no part
    (features.parent / f".{uuid.uuid4().hex}.features.h5.tmp").write_bytes(b"stale temporary")
    run_ok(work_dir, synthetic_cache, "extract", "extract.overwrite=true")
    assert not parts.exists() and not list(features.parent.glob(".*.tmp"))
    with h5py.File(features, "r") as h5file, h5py.File(trained_tiny_run / "features/features.h5", "r") as reference:
        assert sorted(h5file["videos"]) == sorted(reference["videos"])


def test_a_diverging_finetune_stops_in_one_line_and_marks_nothing_best(tmp_path, synthetic_cache):
    work_dir = tmp_path / "work"
    result = run(work_dir, synthetic_cache, "finetune", "finetune.lr=1e12")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert "finetune: training diverged at epoch 1, step" in line and "loss nan" in line, line
    assert not (work_dir / "backbone" / "checkpoint.pt").exists()
    assert not (work_dir / "backbone" / "last.pt").exists()
    assert "Traceback" not in result.stderr


def mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'}): "
                    "the full-disk and read-only cases need one")


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_gives_one_line_and_a_rerun_after_freeing_space_completes(tmp_path, synthetic_cache,
                                                                               trained_tiny_run):
    mount_point = tmp_path / "small"
    mount_tmpfs(mount_point, "900k")
    try:
        work_dir = mount_point / "work"
        result = run(work_dir, synthetic_cache, "all")
        assert result.returncode == 1
        [line] = error_lines(result)
        assert "No space left on device" in line and str(work_dir) in line, line
        assert "Traceback" not in result.stderr
        finished = [stage for stage in STAGES if (work_dir / STAGE_DIRS[stage] / ".done.json").exists()]
        assert finished, "nothing finished before the disk was full: make the tmpfs larger"
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)
        result = run_ok(work_dir, synthetic_cache, "all")
        for stage in finished:
            assert f"{stage}: " in result.stderr and "nothing to do" in result.stderr
        assert (json.loads((work_dir / "eval" / "metrics.json").read_text())
                == json.loads((trained_tiny_run / "eval" / "metrics.json").read_text()))
    finally:
        unmount(mount_point)


def test_a_read_only_work_dir_gives_one_line(tmp_path, synthetic_cache):
    mount_point = tmp_path / "readonly"
    mount_tmpfs(mount_point, "1m")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        work_dir = mount_point / "work"
        result = run(work_dir, synthetic_cache, "finetune")
        assert result.returncode == 1
        [line] = error_lines(result)
        assert "Read-only file system" in line and str(work_dir) in line, line
        assert "Traceback" not in result.stderr
    finally:
        unmount(mount_point)
