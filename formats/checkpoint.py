"""Our checkpoint file: one format for the clip classifier (finetune) and for BMN (bmn).

A ``torch.save`` dict, loadable with ``weights_only=True`` (tensors and plain values only):

| key | what |
| --- | --- |
| ``format_version`` | ``FORMAT_VERSION`` |
| ``kind`` | ``"classifier"`` (TAda2D/TSN clip classifier) or ``"bmn"`` |
| ``model`` | the state dict (of the bare model, never a DDP wrapper) |
| ``model_args`` | BMN: its constructor arguments; classifier: ``{}`` (the architecture is ``config["model"]``) |
| ``config`` | the resolved run config (plain values) |
| ``classes`` | head name -> class names (``{}`` for BMN: proposals are class-agnostic) |
| ``epoch`` | epochs completed |
| ``optimizer``, ``scheduler`` | their state dicts (``None`` in a best-epoch file) |
| ``training_fingerprint`` | what the weights depend on: a resume with another one starts afresh |
| ``val`` | the epoch's validation metrics |

Version 1 files (the classifier's lacked ``kind``, ``model_args``, ``training_fingerprint`` and
``val``; BMN's lacked ``kind``) are read and upgraded in memory. Files are written with
``runstate.atomic.torch_save``: a reader never sees half a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from runstate import atomic

FORMAT_VERSION = 2
KINDS = ("classifier", "bmn")
CHECKPOINT_KEYS = ("format_version", "kind", "model", "model_args", "config", "classes", "epoch", "optimizer",
                   "scheduler", "training_fingerprint", "val")
_V1_KEYS = {"classifier": ("model", "config", "classes", "epoch", "optimizer", "scheduler"),
            "bmn": ("model", "model_args", "config", "classes", "epoch", "optimizer", "scheduler",
                    "training_fingerprint", "val")}


class CheckpointError(ValueError):
    """A checkpoint file or state dict that cannot be read or used; the message names it."""


def check_plain(value: Any, where: str) -> None:
    """Raises ``TypeError`` unless ``value`` is built of dicts, lists, tuples, str, int, float, bool, None."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: keys must be str, got {key!r}")
            check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise TypeError(f"{where}: {type(value).__name__} is not a plain value (dict/list/str/number/bool/None)")


def non_finite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Keys of floating-point tensors holding NaN or inf."""
    return [key for key, tensor in state.items()
            if torch.is_tensor(tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def write_checkpoint(path: str | Path, *, kind: str, model_state: Mapping[str, torch.Tensor],
                     config: Mapping[str, Any], classes: Mapping[str, list[str]], epoch: int,
                     model_args: Mapping[str, Any] | None = None, optimizer_state: dict | None = None,
                     scheduler_state: dict | None = None, training_fingerprint: str = "",
                     val: Mapping[str, float] | None = None) -> None:
    """Write a checkpoint atomically. Refuses non-plain config values and non-finite weights."""
    if kind not in KINDS:
        raise ValueError(f"checkpoint kind must be one of {KINDS}, got {kind!r}")
    check_plain(dict(config), "save_checkpoint: config")
    check_plain(dict(classes), "save_checkpoint: classes")
    check_plain(dict(model_args or {}), "save_checkpoint: model_args")
    bad = non_finite_tensors(model_state)
    if bad:
        raise CheckpointError(f"{path}: refusing to save weights with non-finite values ({', '.join(bad[:3])})")
    checkpoint = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": dict(model_state),
        "model_args": dict(model_args or {}),
        "config": dict(config),
        "classes": {name: list(names) for name, names in classes.items()},
        "epoch": int(epoch),
        "optimizer": optimizer_state,
        "scheduler": scheduler_state,
        "training_fingerprint": str(training_fingerprint),
        "val": {key: float(value) for key, value in (val or {}).items()
                if isinstance(value, (int, float)) and math.isfinite(value)},
    }
    atomic.torch_save(path, checkpoint)


def load_file(path: str | Path, trusted: bool = False) -> Any:
    """``torch.load`` on the CPU; ``weights_only`` (no arbitrary unpickling) unless ``trusted``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted)
    except Exception as error:  # torch raises several types for truncated, corrupt or unsafe files
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(error).__name__}: "
                              f"{first_line})") from None


def upgrade(checkpoint: Any, path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Check a loaded dict against the format (upgrading version 1); ``CheckpointError`` naming the file."""
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise CheckpointError(f"{path}: not one of our checkpoints (no 'format_version' key)")
    version = checkpoint["format_version"]
    if version == 1:
        old_kind = "bmn" if "model_args" in checkpoint else "classifier"
        absent = [key for key in _V1_KEYS[old_kind] if key not in checkpoint]
        if absent:
            raise CheckpointError(f"{path}: checkpoint lacks keys {absent}")
        checkpoint = {"model_args": {}, "training_fingerprint": "", "val": {}, **checkpoint,
                      "kind": old_kind, "format_version": FORMAT_VERSION}
    elif version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {version!r}, this code reads {FORMAT_VERSION} (and 1)")
    absent = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if absent:
        raise CheckpointError(f"{path}: checkpoint lacks keys {absent}")
    if kind is not None and checkpoint["kind"] != kind:
        raise CheckpointError(f"{path}: a {checkpoint['kind']} checkpoint, expected a {kind} checkpoint")
    return checkpoint


def read_checkpoint(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """One of our checkpoints as a dict (on the CPU), checked; ``kind`` (if given) must match."""
    return upgrade(load_file(path), path, kind)
