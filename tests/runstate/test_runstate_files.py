"""Atomic writes, locks, completion stamps, the epoch files and log-file progress, in one process."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

from runstate import atomic, stamp
from runstate.epochs import EpochFiles, TrainingDiverged, check_finite, read_history
from runstate.lock import FileLock, LockHeld, stage_lock
from runstate.runtime import LogProgress

# ---- atomic writes ------------------------------------------------------------------------------


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2, "b": [1.5]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1.5]}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old")
    with pytest.raises(KeyError), atomic.atomic_output(target) as temporary:
        temporary.write_text("half")
        raise KeyError("the writer failed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_output_error_is_one_line_naming_the_file_and_the_cause(tmp_path):
    error = atomic.OutputError(tmp_path / "x.pt", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert str(error) == f"cannot write {tmp_path / 'x.pt'}: No space left on device (errno 28)"
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC


def test_stale_temporaries_are_found_by_name(tmp_path):
    out = atomic.AtomicFile(tmp_path / "features.h5")  # a writer killed before commit leaves this
    (tmp_path / ".abc.other.h5.tmp").write_text("")
    assert atomic.remove_stale_temporaries(tmp_path, "features.h5") == 1
    assert not out.tmp_path.exists() and (tmp_path / ".abc.other.h5.tmp").exists()


# ---- locks --------------------------------------------------------------------------------------


def test_lock_names_its_holder_and_is_refused_twice_in_one_process(tmp_path):
    lock_file = tmp_path / "locks" / "bmn.lock"
    with FileLock(lock_file, "stage bmn"):
        holder = json.loads(lock_file.read_text())
        assert holder["pid"] == os.getpid() and holder["what"] == "stage bmn"
        with pytest.raises(LockHeld, match="stage bmn is already running in this process"):
            FileLock(lock_file, "stage bmn").acquire()
    assert lock_file.read_text() == ""  # released cleanly
    with FileLock(lock_file, "stage bmn"):
        pass


def test_lock_held_by_another_process_is_refused_with_its_pid(tmp_path):
    lock_file = tmp_path / "x.lock"
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # holds the lock until the parent kills it
        try:
            os.close(read_end)
            held = FileLock(lock_file, "stage x").acquire()
            os.write(write_end, b"1")
            import time

            time.sleep(30)
            held.release()
        finally:
            os._exit(0)
    os.close(write_end)
    assert os.read(read_end, 1) == b"1"
    try:
        with pytest.raises(LockHeld, match=rf"lock {lock_file} is held by pid {child} on "):
            FileLock(lock_file, "stage x").acquire()
    finally:
        os.kill(child, 9)
        os.waitpid(child, 0)
    with FileLock(lock_file, "stage x"):  # the dead holder's lock is stale: taken over
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()


def test_stage_lock_clears_what_a_killed_run_of_the_stage_left_and_only_that(tmp_path):
    out_dir = tmp_path / "detections"
    killed_write = atomic.AtomicFile(out_dir / "partial.jsonl")  # killed before its replace
    (out_dir / "submission.json").write_text("{}")
    (out_dir / "sub").mkdir()
    (out_dir / "sub" / ".x.y.tmp").write_text("")  # a subfolder is its own writer's business
    with stage_lock(tmp_path / "locks" / "classify.lock", "classify", output_dir=out_dir):
        assert not killed_write.tmp_path.exists()
        assert sorted(p.name for p in out_dir.iterdir()) == ["sub", "submission.json"]
    assert (out_dir / "sub" / ".x.y.tmp").exists()
    held = FileLock(tmp_path / "locks" / "classify.lock", "stage classify").acquire()
    try:  # refused: another run's temporaries are its own
        live_write = atomic.AtomicFile(out_dir / "submission.json")
        with pytest.raises(LockHeld), stage_lock(tmp_path / "locks" / "classify.lock", "classify", output_dir=out_dir):
            pass
        assert live_write.tmp_path.exists()
    finally:
        held.release()


# ---- completion stamps --------------------------------------------------------------------------


def test_stamp_is_complete_only_while_outputs_are_whole(tmp_path):
    output = tmp_path / "proposals.json"
    output.write_text('{"results": {}}')
    stamp.mark_complete(tmp_path, "fp", [output])
    assert stamp.check_complete(tmp_path, "fp")
    assert stamp.check_complete(tmp_path, "other").reason == "inputs or settings changed since the last complete run"
    output.write_text('{"results": []}')  # same size, other content
    check = stamp.check_complete(tmp_path, "fp")
    assert not check and check.damaged and "content hash differs" in check.reason
    output.unlink()
    assert stamp.check_complete(tmp_path, "fp").reason == f"output {output} is missing"


def test_stamp_runs_the_check_of_an_unhashed_output(tmp_path):
    store = tmp_path / "features.h5"
    store.write_bytes(b"x" * 10)
    verdict = {"problem": ""}
    checks = {store: lambda path: verdict["problem"]}
    stamp.mark_complete(tmp_path, "fp", [store], checks)
    assert "sha256" not in json.loads((tmp_path / stamp.STAMP_NAME).read_text())["outputs"][0]
    assert stamp.check_complete(tmp_path, "fp", checks)
    verdict["problem"] = "video 'a' is not marked complete"
    assert stamp.check_complete(tmp_path, "fp", checks).reason == f"output {store} is damaged: video 'a' is not " \
                                                                   "marked complete"


# ---- epochs -------------------------------------------------------------------------------------


def fake_checkpoints(tmp_path, fingerprint="fp"):
    """EpochFiles whose 'checkpoints' are JSON files (the rule does not depend on the format)."""
    def read(path):
        data = json.loads(path.read_text())
        if "epoch" not in data:
            raise ValueError(f"{path}: not a checkpoint")
        return data

    def save(path, epoch, fp=fingerprint):
        path.write_text(json.dumps({"epoch": epoch, "training_fingerprint": fp}))

    files = EpochFiles("bmn", tmp_path / "last.pt", tmp_path / "best.pt", tmp_path / "metrics.jsonl", fingerprint,
                       read)
    return files, save


def test_history_is_written_before_last_and_a_redone_epoch_is_recorded_once(tmp_path):
    files, save = fake_checkpoints(tmp_path)
    history = files.resume().history
    files.finish_epoch({"epoch": 1}, True, lambda p: save(p, 1), lambda p: save(p, 1), history)

    def crash(path):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after the history line of epoch 2, before last.pt
        files.finish_epoch({"epoch": 2}, False, lambda p: save(p, 2), crash, history)
    assert [r["epoch"] for r in read_history(files.history_path)] == [1, 2]
    resumed = files.resume()
    assert resumed.start_epoch == 1 and [r["epoch"] for r in resumed.history] == [1]
    files.finish_epoch({"epoch": 2}, False, lambda p: save(p, 2), lambda p: save(p, 2), resumed.history)
    assert [r["epoch"] for r in read_history(files.history_path)] == [1, 2]


@pytest.mark.parametrize("damage", ["last unreadable", "other fingerprint", "best missing", "history short"])
def test_resume_starts_afresh_when_its_files_cannot_be_trusted(tmp_path, damage, caplog):
    files, save = fake_checkpoints(tmp_path)
    history = []
    for epoch in (1, 2):
        files.finish_epoch({"epoch": epoch}, True, lambda p, e=epoch: save(p, e), lambda p, e=epoch: save(p, e),
                           history)
    if damage == "last unreadable":
        files.last_path.write_text('{"trunc')
    elif damage == "other fingerprint":
        save(files.last_path, 2, "another")
    elif damage == "best missing":
        files.best_path.unlink()
    else:
        files.history_path.write_text('{"epoch": 1}\n')
    with caplog.at_level(logging.WARNING):
        assert files.resume().start_epoch == 0
    assert "training afresh" in caplog.text
    assert not files.last_path.exists() and not files.history_path.exists()


def test_check_finite_names_stage_epoch_step_and_loss(tmp_path):
    check_finite(1.5, "bmn", 1, 1)
    with pytest.raises(TrainingDiverged, match=r"^bmn: training diverged at epoch 3, step 7: loss inf; stopped, "
                                               r"nothing marked best, no epoch had finished"):
        check_finite(float("inf"), "bmn", 3, 7, tmp_path / "last.pt")


# ---- progress in a log file ---------------------------------------------------------------------


def test_log_progress_writes_the_true_count_every_interval(caplog):
    clock = iter([0.0, 0.0, 1.0, 31.0, 32.0, 70.0, 71.0]).__next__
    bar = LogProgress(range(5), desc="epoch 1/2", unit="batch", every_sec=30.0)
    bar._clock = clock
    bar._started = bar._last = 0.0
    with caplog.at_level(logging.INFO, logger="progress"):
        assert list(bar) == [0, 1, 2, 3, 4]
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["epoch 1/2: 4/5 batch, 0.1 batch/s", "epoch 1/2: 5/5 batch, 0.1 batch/s"]
