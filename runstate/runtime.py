"""Process-level setup shared by the stages: device, seeds, torch.distributed, logging.

Under `torchrun` the environment holds RANK, WORLD_SIZE and LOCAL_RANK; the same code
runs as one process without them. The backend is NCCL on CUDA and gloo on CPU, which is
how multi-process runs are tested on machines without a GPU.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class PartialFailure(RuntimeError):
    """Some items of a batch stage failed; the outputs for all the others were written.

    `pipeline.py --stage all` logs the one-line message, goes on with the next stages (so
    the healthy videos get their detections) and exits non-zero at the end.
    """


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # "cpu" or "cuda:<local_rank>"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def select_device(preference: str, local_rank: int = 0) -> str:
    """"auto" -> "cuda:<local_rank>" when CUDA is available, else "cpu"."""
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if preference in ("cuda", "auto") and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return "cpu"


def init_distributed(device_preference: str) -> DistributedContext:
    """Join the torchrun process group if there is one (idempotent)."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(rank, world_size, local_rank, device)


def barrier(ctx: DistributedContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def broadcast(value, ctx: DistributedContext):
    """Rank 0's ``value`` (any picklable object) on every rank; the value itself in a one-process run."""
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_HEAP_BLOCKS_UP_TO = 1 << 30  # bytes: blocks up to this size come from the heap, not their own mapping
_TOP_PAD = 64 << 20  # bytes the heap grows by beyond each request


def retain_freed_memory() -> bool:
    """Keep the memory that freed tensors leave inside this process (glibc malloc) for the next
    tensors, instead of handing it back to the OS and taking fresh pages again.

    By default glibc gives every block above a threshold (adjusted up to 32 MB) its own mapping
    and returns the heap's free top to the OS, so the activations of every pass arrive as fresh
    pages that the kernel zero-fills one 4 KB page fault at a time: about 70,000 faults per
    ResNet-50 forward of 8x224x224 frames and 700,000 per training step at batch 8 x 8x112x112
    on this CPU, which took 0.80x (inference) and about 0.87x (training step) the time with blocks
    up to 1 GB kept in the heap and no trimming (``bench`` runs, alternating processes). The cost:
    the process keeps its peak size until it exits (5-15 % more peak RSS measured in training).

    Called by ``pipeline.py`` before any stage; forked DataLoader workers inherit it. Does nothing
    and returns False off glibc, or when the environment sets glibc's malloc tunables
    (``MALLOC_*_``, ``GLIBC_TUNABLES``) or preloads an allocator (``LD_PRELOAD``): those win.
    """
    if not sys.platform.startswith("linux") or "LD_PRELOAD" in os.environ or "GLIBC_TUNABLES" in os.environ:
        return False
    if any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        settings = ((_M_MMAP_THRESHOLD, _HEAP_BLOCKS_UP_TO), (_M_TRIM_THRESHOLD, -1), (_M_TOP_PAD, _TOP_PAD))
        return all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    except (OSError, AttributeError):  # not glibc (musl has no libc.so.6 or no mallopt)
        return False


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        import torch

        torch.set_num_threads(num_threads)


def model_threads(num_threads: int, num_workers: int, device: str) -> int:
    """Torch threads of the extraction model: ``runtime.num_threads``, or when that is 0 on the CPU,
    torch's default capped at the cores the decoders leave free: one per decode worker process,
    or, with ``num_workers=0``, one for the decoding thread (``features.loop.decoded_in_thread``).

    A decoder competing with the model's threads for a core stalls them all at every
    synchronisation point of the parallel kernels, which costs more than the decoder's share.
    """
    if num_threads > 0 or device != "cpu":
        return num_threads
    import torch

    free_cores = len(os.sched_getaffinity(0)) - max(num_workers, 1)
    return min(torch.get_num_threads(), max(1, free_cores))


def lower_priority(niceness: int) -> None:
    """Adds ``niceness`` (>= 0) to the calling thread's nice value; the threads it starts later inherit
    it (on Linux the value is per thread, so call it first thing in the thread or process it is for).
    A lower priority needs no privilege; where the system refuses anyway, nothing changes."""
    if niceness > 0:
        try:
            os.nice(niceness)
        except OSError:
            pass


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_console = None


def console_stream():
    """Where our console output goes (log lines, progress bars): stderr as it was when first asked
    for, written through a duplicate of its file descriptor.

    ``data.video`` points descriptor 2 at /dev/null while decord decodes (its C++ logger writes
    there). When a thread of this process decodes (extraction with ``runtime.num_workers=0``), that
    would swallow whatever the main thread logs meanwhile, a failed video's line included.
    """
    global _console
    if _console is None:
        try:
            sys.stderr.flush()
            _console = open(os.dup(sys.stderr.fileno()), "w", buffering=1,  # line-buffered
                            encoding=sys.stderr.encoding or "utf-8", errors="backslashreplace")
        except (AttributeError, OSError, ValueError):  # stderr without a descriptor (replaced)
            _console = sys.stderr
    return _console


def setup_logging(log_file: Path | None = None, rank: int = 0) -> logging.Handler | None:
    """Console logging for rank 0 (warnings only for other ranks), plus a file if given."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_tal_console", False) for h in root.handlers):
        console = logging.StreamHandler(console_stream())
        console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        console.setLevel(logging.INFO if rank == 0 else logging.WARNING)
        console._tal_console = True  # type: ignore[attr-defined]
        root.addHandler(console)
    if log_file is None:
        return None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file if rank == 0 else log_file.with_suffix(f".rank{rank}.log"))
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return handler


class LogProgress:
    """A progress display for a log file: one INFO line every ``every_sec`` seconds with the true count.

    The same calls as the ``tqdm`` bars it stands in for (iteration, ``update``, ``set_postfix``,
    ``close``), so a stage writes one loop whatever its stderr is.
    """

    def __init__(self, iterable=None, total: int | None = None, desc: str = "", unit: str = "it",
                 every_sec: float = 30.0, disable: bool = False):
        import time

        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.every_sec, self.disable = desc, unit, every_sec, disable
        self.n = 0
        self.postfix = ""
        self._clock = time.monotonic
        self._started = self._last = self._clock()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def __len__(self) -> int:
        return self.total or 0

    def update(self, count: int = 1) -> None:
        self.n += count
        if self._clock() - self._last >= self.every_sec:
            self._emit()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **values) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def _emit(self) -> None:
        self._last = self._clock()
        if self.disable:
            return
        elapsed = self._last - self._started
        total = f"/{self.total}" if self.total is not None else ""
        rate = self.n / elapsed if elapsed > 0 else 0.0
        postfix = f" ({self.postfix})" if self.postfix else ""
        logging.getLogger("progress").info("%s: %d%s %s, %.1f %s/s%s", self.desc, self.n, total, self.unit,
                                           rate, self.unit, postfix)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "it", disable: bool = False,
             leave: bool = True, every_sec: float = 30.0):
    """A tqdm bar on a terminal; in a log file (stderr not a terminal) a ``LogProgress`` line every
    ``every_sec`` seconds with the true count, instead of tqdm's stale redraws."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave,
                    dynamic_ncols=True, mininterval=1.0, file=console_stream())
    return LogProgress(iterable, total=total, desc=desc, unit=unit, every_sec=every_sec, disable=disable)
