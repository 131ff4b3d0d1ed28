"""BMN training pieces: one epoch, checkpoints (DESIGN.md format), the per-epoch metrics file.

Checkpoints (``torch.save`` dicts, loadable with ``weights_only=True``): ``model``
(state dict), ``model_args`` (the ``BMN`` constructor arguments, so that
``load_bmn`` rebuilds the network without a config), ``config`` (the resolved
config), ``classes`` (``{}``: proposals are class-agnostic), ``epoch`` (epochs
completed), ``optimizer``, ``scheduler``, ``training_fingerprint`` (what the
weights depend on; a resume with other settings starts afresh), ``val`` (the
epoch's validation metrics) and ``format_version``. Writes are atomic: a
temporary file renamed over the target.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from configs.runtime import DistributedContext
from proposals.bmn import BMN
from proposals.infer import LossMeter
from proposals.losses import bmn_loss

FORMAT_VERSION = 1
CHECKPOINT_KEYS = ("model", "model_args", "config", "classes", "epoch", "optimizer", "scheduler",
                   "training_fingerprint", "val", "format_version")


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    valid_mask: torch.Tensor,
    loss_generator: torch.Generator,
    device: torch.device,
    ctx: DistributedContext,
    description: str = "",
) -> tuple[dict[str, float], float]:
    """One pass over ``loader``; returns (mean loss terms over all ranks, training sequences per second).

    Args:
        model: ``BMN`` or its DDP wrapper.
        loader: batches of ``BMNInputs`` items.
        valid_mask: ``(D, T)`` valid BM cells on ``device``.
        loss_generator: random source of the regression loss's cell sampling (on ``device``).
    """
    model.train()
    meter = LossMeter()
    started = time.perf_counter()
    bar = tqdm(loader, desc=description, disable=not ctx.is_main, leave=False, dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s
    for features, gt_iou, gt_start, gt_end, _, _ in bar:
        confidence_map, start, end = model(features.to(device))  # (B, 2, D, T), (B, T), (B, T)
        loss = bmn_loss(confidence_map, start, end, gt_iou.to(device), gt_start.to(device), gt_end.to(device),
                        valid_mask, loss_generator)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        meter.add(loss, len(features))
        bar.set_postfix(loss=f"{loss.total.item():.3f}")
    means = meter.means(ctx)
    num_sequences = float(meter.sums[-1]) * ctx.world_size  # DistributedSampler: equal shares per rank
    return means, num_sequences / (time.perf_counter() - started)


def bmn_model_args(temporal_scale: int, feature_dim: int, hidden_1d: int, hidden_2d: int, hidden_3d: int,
                   num_sample: int, num_sample_perbin: int, prop_boundary_ratio: float,
                   max_duration: int | None) -> dict[str, Any]:
    """The ``BMN`` constructor arguments as a plain dict (what checkpoints store)."""
    return dict(temporal_scale=int(temporal_scale), feature_dim=int(feature_dim), hidden_1d=int(hidden_1d),
                hidden_2d=int(hidden_2d), hidden_3d=int(hidden_3d), num_sample=int(num_sample),
                num_sample_perbin=int(num_sample_perbin), prop_boundary_ratio=float(prop_boundary_ratio),
                max_duration=None if max_duration is None else int(max_duration))


def save_bmn_checkpoint(
    path: str | Path,
    model: BMN,
    model_args: dict[str, Any],
    config: dict[str, Any],
    epoch: int,
    training_fingerprint: str,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    val: dict[str, float] | None = None,
) -> None:
    """Writes a BMN checkpoint atomically (the format in the module docstring).

    ``model`` is the bare network (``ddp_model.module`` under DDP).
    """
    checkpoint = {
        "model": model.state_dict(),
        "model_args": dict(model_args),
        "config": dict(config),
        "classes": {},
        "epoch": int(epoch),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "training_fingerprint": training_fingerprint,
        "val": dict(val or {}),
        "format_version": FORMAT_VERSION,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def read_bmn_checkpoint(path: str | Path) -> dict[str, Any]:
    """A BMN checkpoint as a dict, on the CPU; ``ValueError`` naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BMN checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"BMN checkpoint {path} cannot be read ({error})") from error
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise ValueError(f"{path} is not a BMN checkpoint of this project: missing {missing}")
    if checkpoint["format_version"] != FORMAT_VERSION:
        raise ValueError(f"BMN checkpoint {path}: format_version {checkpoint['format_version']!r}, "
                         f"this code reads {FORMAT_VERSION}")
    return checkpoint


def load_bmn(path: str | Path, device: str | torch.device = "cpu") -> tuple[BMN, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)``: the network rebuilt from ``model_args``."""
    checkpoint = read_bmn_checkpoint(path)
    model = BMN(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


def read_history(path: Path, completed_epochs: int) -> list[dict]:
    """The metrics lines of epochs already done; rewrites the file without lines of later epochs
    (an epoch whose line was written before a crash, and that is now redone)."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [record for record in records if record["epoch"] <= completed_epochs]
    if len(kept) < len(records):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(record) + "\n" for record in kept))
        os.replace(tmp, path)
    return kept


def append_history(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
