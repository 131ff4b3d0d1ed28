"""Locks: one process at a time runs a stage on a work dir, or writes a feature store.

``FileLock(path)`` takes a POSIX record lock (``fcntl.lockf``) on ``path`` without waiting
and writes its holder (pid, host, what it runs) into the file. A second process that finds
the lock held gets ``LockHeld``, whose one-line message names the lock file and the holder's
pid. The kernel drops a record lock when its process dies, so a lock file left by a
SIGKILLed run is *stale*: the next run takes it over (and logs whose it was). Unlike
``flock``, a record lock is not inherited by forked children, so the DataLoader workers of
a killed run, which may linger a few seconds, do not block its rerun.

A record lock does not exclude the process that holds it, and closing any descriptor of
the file would release it; so a process never opens a lock file twice: a per-process set
refuses a second ``FileLock`` on the same file in the same process.

``stage_lock(paths.lock_file(stage), stage, output_dir=paths.stage_dir(stage))`` is the lock the
pipeline takes around each stage (``<work_dir>/locks/<stage>.lock``); once it holds it, it clears
the temporaries a killed run of the stage left in the stage's folder. The ranks of one torchrun
run are one holder: rank 0 takes the lock and tells the others whether it got it (a broadcast),
so a second run, with one process or many, stops at once on every rank.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from runstate.atomic import OutputError, make_dirs, remove_stale_temporaries

log = logging.getLogger(__name__)

_HELD_IN_THIS_PROCESS: set[str] = set()


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names the lock file and the holder's pid."""


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
    except (ValueError, KeyError, TypeError):
        return "a process that left no pid"


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (see the module docstring).

    Args:
        path: the lock file (created if missing; left in place when released).
        what: what the holder does, e.g. "stage bmn" (written into the file and the error message).
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what
        self._handle = None
        self._key = str(Path(os.path.abspath(self.path)))

    def acquire(self) -> FileLock:
        if self._key in _HELD_IN_THIS_PROCESS:
            raise LockHeld(f"{self.what} is already running in this process (lock {self.path})")
        make_dirs(self.path.parent)
        try:
            handle = open(self.path, "a+")
        except OSError as error:
            raise OutputError(self.path, error) from None
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise OutputError(self.path, error) from None
            raise LockHeld(f"{self.what} is already running on this work dir: lock {self.path} is held by "
                           f"{_describe_holder(holder)}") from None
        handle.seek(0)
        previous = handle.read()
        if previous.strip():
            log.info("%s: taking over the stale lock %s (left by %s, no longer running)", self.what, self.path,
                     _describe_holder(previous))
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder) + "\n")
            handle.flush()
        except OSError as error:
            handle.close()
            raise OutputError(self.path, error) from None
        self._handle = handle
        _HELD_IN_THIS_PROCESS.add(self._key)
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        try:
            self._handle.seek(0)
            self._handle.truncate()  # an empty lock file says: released cleanly
        except OSError:
            pass  # e.g. the file system went read-only: the kernel still drops the lock below
        self._handle.close()  # closing the descriptor releases the record lock
        self._handle = None
        _HELD_IN_THIS_PROCESS.discard(self._key)

    @property
    def held(self) -> bool:
        return self._handle is not None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


@contextmanager
def stage_lock(lock_file: str | os.PathLike, stage: str, device: str = "auto",
               output_dir: str | os.PathLike | None = None):
    """Hold ``lock_file`` (``RunPaths.lock_file(stage)``) for the block; every torchrun rank raises
    ``LockHeld`` together when another run holds it.

    ``output_dir`` (``RunPaths.stage_dir(stage)``): the temporaries a killed run of the stage left
    there are removed once the lock is held, by rank 0 before the other ranks go on, so no
    writer of this run has begun.
    """
    lock = FileLock(lock_file, f"stage {stage}")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    refusal = ""
    if rank == 0:
        try:
            lock.acquire()
        except LockHeld as error:
            refusal = str(error)
        else:
            if output_dir is not None and (removed := remove_stale_temporaries(output_dir)):
                log.info("removed %d temporary file(s) a killed run left in %s", removed, output_dir)
    if world_size > 1:
        refusal = _broadcast_from_rank0(refusal, device)
    if refusal:
        raise LockHeld(refusal)
    try:
        yield lock
    finally:
        lock.release()


def _broadcast_from_rank0(text: str, device: str) -> str:
    """Rank 0's ``text`` on every rank (joins the process group the stage would join anyway)."""
    from runstate.runtime import broadcast, init_distributed

    return broadcast(text, init_distributed(device))
