"""Work split into parts that run side by side in forked processes: the CPU-bound reading and scoring
of leaderboard-size files (hundreds of thousands of entries), which is single-threaded Python and C
and so cannot use a second core any other way.

``run_in_parts(work, num_parts)`` returns ``[work(0, num_parts), ..., work(num_parts - 1, num_parts)]``.
Part 0 runs in this process; each other part runs in a child forked when the call starts (it sees
this process's memory as it was then, copy-on-write) and sends its pickled result back through a
pipe. The result never depends on the children: a part whose child raises, dies or cannot start
is run again here, so its exception (a malformed file, say) is raised here as it would be without
children. With one part, or where ``fork`` is not the safe default (off Linux), the parts run here
one after the other.

``work`` must give the same result wherever it runs: it computes its share from ``(part,
num_parts)`` alone and must not write files.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import numpy as np

MAX_PARTS = 4  # beyond this the parts' merging and the memory bandwidth eat the gain

T = TypeVar("T")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as taskset and container limits set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def can_fork() -> bool:
    """Whether parts may run in forked children: on Linux, where fork is the default start method."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def default_parts(work_size: int, size_per_part: int) -> int:
    """How many parts a job of ``work_size`` units splits into by default: one per ``size_per_part``
    units (below that a child costs more than it saves), at most one per usable CPU and
    :data:`MAX_PARTS`; 1 where parts cannot fork."""
    if not can_fork():
        return 1
    return max(1, min(usable_cpus(), MAX_PARTS, work_size // max(size_per_part, 1)))


def contiguous_shares(sizes: np.ndarray, num_parts: int) -> np.ndarray:
    """``(num_parts + 1,)`` bounds: part ``k`` takes items ``bounds[k]:bounds[k + 1]``, consecutive
    items whose ``sizes`` (``(N,)``, >= 0) add up to about ``1 / num_parts`` of the total, cut where
    the running total crosses a multiple of it (an item larger than a share can leave a part empty)."""
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    total = int(ends[-1]) if len(ends) else 0
    bounds = np.searchsorted(ends, total * np.arange(num_parts) // num_parts, side="right")
    bounds[0] = 0
    return np.append(bounds, len(ends))


def run_in_parts(work: Callable[[int, int], T], num_parts: int) -> list[T]:
    """``[work(part, num_parts) for part in range(num_parts)]``, the parts after the first in forked
    children (see the module docstring)."""
    num_parts = max(1, int(num_parts))
    if num_parts == 1 or not can_fork():
        return [work(part, num_parts) for part in range(num_parts)]
    context = multiprocessing.get_context("fork")
    children = []  # (part, process or None, receiving end or None)
    try:
        for part in range(1, num_parts):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(target=_run_child, args=(work, part, num_parts, sender), daemon=True)
            try:
                process.start()
            except OSError:  # no more processes or memory: this part runs here
                receiver.close()
                process, receiver = None, None
            sender.close()
            children.append((part, process, receiver))
        results = [work(0, num_parts)]
        for part, process, receiver in children:
            results.append(_child_result(part, process, receiver, work, num_parts))
        return results
    finally:
        for _, process, receiver in children:
            if receiver is not None:
                receiver.close()
            if process is not None and process.is_alive():
                process.kill()
                process.join()


def _run_child(work: Callable[[int, int], T], part: int, num_parts: int, sender) -> None:
    """In the child: send ``(True, result)``, or ``(False, None)`` when the work raised (the parent
    runs the part again and raises the exception itself)."""
    try:
        outcome = (True, work(part, num_parts))
    except BaseException:  # noqa: BLE001 - any failure: the parent redoes the part
        outcome = (False, None)
    try:
        sender.send(outcome)
    finally:
        sender.close()


def _child_result(part: int, process, receiver, work: Callable[[int, int], T], num_parts: int) -> T:
    """The result a child sent, else the part computed here."""
    if process is None:
        return work(part, num_parts)
    try:
        done, result = receiver.recv()
    except (EOFError, OSError):  # the child died (killed, out of memory) before sending
        done, result = False, None
    process.join()
    return result if done else work(part, num_parts)
