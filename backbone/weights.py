"""Saving our checkpoints and loading weights of three kinds into a ``TAda2D``.

Formats read by ``load_checkpoint`` / ``load_weights``:

* ``"checkpoint"``: ours (DESIGN.md), a ``torch.save`` dict with ``model`` (state dict),
  ``config``, ``classes``, ``epoch``, ``optimizer``, ``scheduler``, ``format_version``;
* ``"torchvision"``: a bare state dict in torchvision ResNet naming (``conv1.weight``, ``bn1.*``,
  ``layerX.Y.convZ/bnZ/downsample.0|1.*``, ``fc.*``): torchvision's ImageNet files, or our own
  ``model.state_dict()``. Our model uses the same names, so keys map 1:1; ``fc.*`` has no
  counterpart (reported unexpected), and the route functions, BN2 and heads keep their
  initialisation (reported missing);
* ``"official"``: checkpoints of the official TAdaConv release (alibaba-mmai-research/TAdaConv):
  ``{"model_state": {...}}`` with ``backbone.``/``head.`` prefixes and 3D (``[Cout, Cin, 1, k, k]``)
  or TAdaConv (``[1, 1, Cout, Cin, k, k]``) kernels. See ``OFFICIAL_BRANCH_NAMES``.

A tensor goes in when its shape equals the parameter's once size-1 axes are dropped (the official
``[1, 1, Cout, Cin, 3, 3]`` -> our ``(Cout, Cin, 3, 3)``); otherwise it is skipped and listed in
the report's ``mismatched`` (e.g. a 400-class head offered to a 10-class model).
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from backbone.tada2d import Bottleneck, TAda2D
from formats import checkpoint as formats_checkpoint
from formats.checkpoint import CHECKPOINT_KEYS, FORMAT_VERSION, CheckpointError, write_checkpoint

__all__ = ["CHECKPOINT_KEYS", "FORMAT_VERSION", "CheckpointError", "LoadReport", "ShapeMismatch", "detect_format",
           "load_checkpoint", "load_weights", "read_checkpoint", "save_checkpoint"]

# Official branch submodule -> ours, per block type. Official TAda2D only has bottlenecks; the
# official R2D simple block (a, b) maps onto our basic block.
OFFICIAL_BRANCH_NAMES: dict[str, dict[str, str]] = {
    "bottleneck": {
        "a": "conv1", "a_bn": "bn1",
        "b": "conv2", "b_bn": "bn2",
        "b_rf.g": "route.global_linear", "b_rf.a": "route.conv_reduce",
        "b_rf.bn": "route.bn", "b_rf.b": "route.conv_expand",
        "b_avgpool_bn": "pool_bn",
        "c": "conv3", "c_bn": "bn3",
    },
    "basic": {"a": "conv1", "a_bn": "bn1", "b": "conv2", "b_bn": "bn2"},
}
# backbone.conv<stage>.res_<block>.<rest>: stage 2..5 is our layer1..4, block 1.. is our index 0..
_OFFICIAL_BLOCK_KEY = re.compile(r"^backbone\.conv([2-5])\.res_(\d+)\.(.+)$")
# "conv_branch.b_rf.a.weight" -> module path "b_rf.a", tensor name "weight"
_OFFICIAL_BRANCH_KEY = re.compile(r"^conv_branch\.(.+)\.([^.]+)$")


class ShapeMismatch(NamedTuple):
    file_key: str
    model_key: str
    file_shape: tuple[int, ...]
    model_shape: tuple[int, ...]

    def __str__(self) -> str:
        return (f"{self.file_key} -> {self.model_key}: file shape {list(self.file_shape)}, "
                f"model shape {list(self.model_shape)} (skipped)")


@dataclass
class LoadReport:
    """What a load did. Keys of the model are ours; keys of the file are as written in the file.

    ``num_batches_tracked`` BN counters are never listed as missing (older files lack them and
    they play no part with a fixed BN momentum).
    """

    source_format: str
    loaded: list[str] = field(default_factory=list)  # model keys that received a tensor
    missing: list[str] = field(default_factory=list)  # model keys left as they were
    unexpected: list[str] = field(default_factory=list)  # file keys with no counterpart in the model
    mismatched: list[ShapeMismatch] = field(default_factory=list)  # counterpart found, shape differs

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors ({self.source_format} format)"]
        for title, items in (("missing in file", self.missing), ("unexpected in file", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(str(item) for item in items))
        return "\n".join(lines)


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: Mapping[str, Any],
    classes: Mapping[str, list[str]],
    epoch: int,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    training_fingerprint: str = "",
    val: Mapping[str, float] | None = None,
) -> None:
    """Writes a classifier checkpoint (``formats.checkpoint``) atomically.

    Args:
        path: the file to write.
        model: the model (not a DDP wrapper: pass ``ddp_model.module``).
        config: the resolved config as plain values (checked, so that it loads with ``weights_only``).
        classes: head name -> class names.
        epoch: epochs completed.
        optimizer, scheduler: objects with ``state_dict()``, or None.
        training_fingerprint: what the weights depend on (finetune's resume rule).
        val: the epoch's validation metrics.
    """
    write_checkpoint(path, kind="classifier", model_state=model.state_dict(), config=config, classes=classes,
                     epoch=epoch, optimizer_state=optimizer.state_dict() if optimizer is not None else None,
                     scheduler_state=scheduler.state_dict() if scheduler is not None else None,
                     training_fingerprint=training_fingerprint, val=val)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Reads one of our classifier checkpoints (on CPU) and checks its keys and format version."""
    return formats_checkpoint.read_checkpoint(path, kind="classifier")


def _strip_module_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drops a leading ``module.`` (a DistributedDataParallel wrapper's state dict)."""
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module."):]: value for key, value in state.items()}
    return dict(state)


def detect_format(source: Mapping[str, Any]) -> str:
    """``"checkpoint"``, ``"official"`` or ``"torchvision"`` for a loaded file; raises otherwise."""
    if "format_version" in source and "model" in source:
        return "checkpoint"
    if "model_state" in source:
        return "official"
    if source and all(isinstance(value, Tensor) for value in source.values()):
        keys = _strip_module_prefix(source)
        if any(key.startswith("backbone.") for key in keys):
            return "official"
        if "conv1.weight" in keys:
            return "torchvision"
    raise CheckpointError(
        "unrecognised weights: expected our checkpoint (format_version, model), an official TAdaConv "
        "checkpoint (model_state) or a torchvision-style ResNet state dict (conv1.weight, layer1...); "
        f"got keys {list(source)[:8]}"
    )


def _official_key_map(model: TAda2D, file_keys: list[str]) -> dict[str, str]:
    """Official file key -> our model key, for the keys that have a counterpart."""
    head_names = list(model.heads)
    # Single-head files use head.out; two-head (EK100) files head.linear1 (verb) and head.linear2 (noun),
    # which go to our heads in order (EK models list verb first).
    if len(head_names) == 1:
        head_map = {"out": head_names[0]}
    else:
        head_map = {f"linear{index + 1}": name for index, name in enumerate(head_names)}
    mapping = {}
    for key in file_keys:
        if key.startswith("backbone.conv1.a."):
            mapping[key] = "conv1." + key[len("backbone.conv1.a."):]
        elif key.startswith("backbone.conv1.a_bn."):
            mapping[key] = "bn1." + key[len("backbone.conv1.a_bn."):]
        elif key.startswith("head."):
            module_name, _, tensor_name = key[len("head."):].partition(".")
            if module_name in head_map:
                mapping[key] = f"heads.{head_map[module_name]}.{tensor_name}"
        elif match := _OFFICIAL_BLOCK_KEY.match(key):
            stage, block, rest = int(match[1]), int(match[2]), match[3]
            stage_blocks = model.stages[stage - 2]
            if not 1 <= block <= len(stage_blocks):
                continue
            prefix = f"layer{stage - 1}.{block - 1}."
            if rest.startswith("short_cut."):
                mapping[key] = prefix + "downsample.0." + rest[len("short_cut."):]
            elif rest.startswith("short_cut_bn."):
                mapping[key] = prefix + "downsample.1." + rest[len("short_cut_bn."):]
            elif branch := _OFFICIAL_BRANCH_KEY.match(rest):
                block_type = "bottleneck" if isinstance(stage_blocks[block - 1], Bottleneck) else "basic"
                ours = OFFICIAL_BRANCH_NAMES[block_type].get(branch[1])
                if ours is not None:
                    mapping[key] = f"{prefix}{ours}.{branch[2]}"
    return mapping


def _fit(tensor: Tensor, shape: torch.Size) -> Tensor | None:
    """``tensor`` reshaped to ``shape`` if they agree once size-1 axes are dropped, else None."""
    if tensor.shape == shape:
        return tensor
    if [n for n in tensor.shape if n != 1] == [n for n in shape if n != 1]:
        return tensor.reshape(shape)
    return None


def load_weights(model: TAda2D, source: Mapping[str, Any], strict: bool = False) -> LoadReport:
    """Loads weights from an in-memory checkpoint or state dict (any supported format) into ``model``.

    Args:
        model: the model to fill; parameters without a counterpart keep their values.
        source: what ``torch.load`` returned for one of the formats in this module's docstring.
        strict: raise ``CheckpointError`` unless every model tensor is loaded and every file
            tensor is used (e.g. when resuming from our own checkpoint).

    Returns:
        a ``LoadReport``.
    """
    source_format = detect_format(source)
    if source_format == "checkpoint":
        state = _strip_module_prefix(source["model"])
    elif source_format == "official":
        state = _strip_module_prefix(source["model_state"] if "model_state" in source else source)
    else:
        state = _strip_module_prefix(source)
    if source_format == "official":
        key_map = _official_key_map(model, list(state))
    else:
        key_map = {key: key for key in state}

    model_state = model.state_dict()
    report = LoadReport(source_format=source_format)
    with torch.no_grad():
        for file_key, tensor in state.items():
            model_key = key_map.get(file_key)
            if model_key is None or model_key not in model_state:
                report.unexpected.append(file_key)
                continue
            target = model_state[model_key]
            fitted = _fit(tensor, target.shape)
            if fitted is None:
                report.mismatched.append(
                    ShapeMismatch(file_key, model_key, tuple(tensor.shape), tuple(target.shape))
                )
                continue
            target.copy_(fitted)
            report.loaded.append(model_key)
    loaded = set(report.loaded)
    report.missing = [
        key for key in model_state if key not in loaded and not key.endswith("num_batches_tracked")
    ]
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise CheckpointError(f"strict load failed:\n{report.summary()}")
    return report


def load_checkpoint(
    path: str | Path, model: TAda2D, strict: bool = False, trusted: bool = False
) -> LoadReport:
    """Reads ``path`` (our checkpoint, an official TAdaConv checkpoint or a torchvision state dict)
    and loads it into ``model``; see ``load_weights``. Errors name the file.

    ``trusted=True`` lets ``torch.load`` unpickle arbitrary objects, for files from a source you
    trust that hold more than tensors and plain values; by default only those are read.
    """
    source = formats_checkpoint.load_file(path, trusted=trusted)
    if not isinstance(source, Mapping):
        raise CheckpointError(f"{path}: holds a {type(source).__name__}, not a checkpoint dict")
    if "format_version" in source:
        source = formats_checkpoint.upgrade(source, path)  # version and keys of our own format
    try:
        return load_weights(model, source, strict=strict)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
