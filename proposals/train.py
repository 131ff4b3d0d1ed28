"""BMN training pieces: one epoch, and its checkpoints (``formats.checkpoint``, kind ``"bmn"``).

A BMN checkpoint's ``model_args`` are the ``BMN`` constructor arguments, so that ``load_bmn``
rebuilds the network without a config; ``classes`` is ``{}`` (proposals are class-agnostic);
``val`` holds the epoch's validation metrics.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from formats.checkpoint import read_checkpoint, write_checkpoint
from proposals.bmn import BMN
from proposals.infer import LossMeter
from proposals.losses import bmn_loss
from runstate.epochs import check_finite
from runstate.runtime import DistributedContext, progress


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    valid_mask: torch.Tensor,
    loss_generator: torch.Generator,
    device: torch.device,
    ctx: DistributedContext,
    description: str = "",
    epoch: int = 1,
    last_path: Path = Path("last.pt"),
) -> tuple[dict[str, float], float]:
    """One pass over ``loader``; returns (mean loss terms over all ranks, training sequences per second).

    Args:
        model: ``BMN`` or its DDP wrapper.
        loader: batches of ``BMNInputs`` items.
        valid_mask: ``(D, T)`` valid BM cells on ``device``.
        loss_generator: random source of the regression loss's cell sampling (on ``device``).
        epoch, last_path: for the message when the loss diverges (``runstate.epochs.TrainingDiverged``).
    """
    model.train()
    meter = LossMeter()
    started = time.perf_counter()
    bar = progress(loader, desc=description, unit="batch", disable=not ctx.is_main, leave=False)
    for step, (features, gt_iou, gt_start, gt_end, _, _) in enumerate(bar, start=1):
        confidence_map, start, end = model(features.to(device))  # (B, 2, D, T), (B, T), (B, T)
        loss = bmn_loss(confidence_map, start, end, gt_iou.to(device), gt_start.to(device), gt_end.to(device),
                        valid_mask, loss_generator)
        total = loss.total.item()
        check_finite(total, "bmn", epoch, step, last_path)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        meter.add(loss, len(features))
        bar.set_postfix(loss=f"{total:.3f}")
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
    """Writes a BMN checkpoint atomically. ``model`` is the bare network (``ddp_model.module`` under DDP)."""
    write_checkpoint(path, kind="bmn", model_state=model.state_dict(), model_args=model_args, config=config,
                     classes={}, epoch=epoch, optimizer_state=optimizer.state_dict() if optimizer else None,
                     scheduler_state=scheduler.state_dict() if scheduler else None,
                     training_fingerprint=training_fingerprint, val=val)


def read_bmn_checkpoint(path: str | Path) -> dict[str, Any]:
    """A BMN checkpoint as a dict, on the CPU; ``FileNotFoundError`` when absent, ``CheckpointError``
    (a ``ValueError``) naming the file when it is not a whole BMN checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"BMN checkpoint {path} does not exist")
    return read_checkpoint(path, kind="bmn")


def load_bmn(path: str | Path, device: str | torch.device = "cpu") -> tuple[BMN, dict[str, Any]]:
    """``(model in eval mode on device, checkpoint dict)``: the network rebuilt from ``model_args``."""
    checkpoint = read_bmn_checkpoint(path)
    return bmn_from_checkpoint(checkpoint, device), checkpoint


def bmn_from_checkpoint(checkpoint: dict[str, Any], device: str | torch.device = "cpu") -> BMN:
    """The network of a BMN checkpoint dict (read from a file or a model bundle), in eval mode."""
    model = BMN(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()
