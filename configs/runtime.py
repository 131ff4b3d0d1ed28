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


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        import torch

        torch.set_num_threads(num_threads)


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_file: Path | None = None, rank: int = 0) -> logging.Handler | None:
    """Console logging for rank 0 (warnings only for other ranks), plus a file if given."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    if not any(getattr(h, "_tal_console", False) for h in root.handlers):
        console = logging.StreamHandler(sys.stderr)
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
