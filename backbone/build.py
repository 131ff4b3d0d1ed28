"""Builds a backbone by name: ``"tada2d"`` (TAda2D) or ``"tsn"`` (the R2D / TSN baseline).

Both are ``backbone.tada2d.TAda2D``; the baseline switches TAdaConv and the temporal aggregation
off in every stage, so its state dict is TAda2D's minus the route functions and BN2.
"""

from dataclasses import dataclass
from pathlib import Path

from backbone.clips import Normalization, resolve_normalization
from backbone.tada2d import TAda2D
from backbone.weights import load_weights, read_checkpoint
from runstate.stamp import file_sha256

# name -> (TAdaConv in res2..res5, temporal aggregation)
BACKBONES: dict[str, tuple[tuple[bool, bool, bool, bool], bool]] = {
    "tada2d": ((True, True, True, True), True),
    "tsn": ((False, False, False, False), False),
}


def build_model(
    name: str,
    depth: int,
    heads: dict[str, int],
    width: int = 64,
    num_frames: int = 8,
    dropout: float = 0.5,
    route_reduction: int = 4,
    route_kernels: tuple[int, int] = (3, 3),
) -> TAda2D:
    """Returns a freshly initialised model.

    Args:
        name: ``"tada2d"`` or ``"tsn"``.
        depth: ResNet depth (18, 34, 50, 101).
        heads: head name -> number of classes.
        width: base width (64 for the real ResNet; small values for CPU-sized models).
        num_frames: frames per clip.
        dropout: dropout before the heads.
        route_reduction, route_kernels: route function settings (ignored by ``"tsn"``).
    """
    if name not in BACKBONES:
        raise ValueError(f"build_model: unknown backbone name {name!r}; choose one of {sorted(BACKBONES)}")
    tada_stages, temporal_aggregation = BACKBONES[name]
    return TAda2D(
        depth=depth,
        heads=heads,
        width=width,
        num_frames=num_frames,
        tada_stages=tada_stages,
        route_reduction=route_reduction,
        route_kernels=route_kernels,
        temporal_aggregation=temporal_aggregation,
        dropout=dropout,
    )


def build_from_section(section: dict, heads: dict[str, int]) -> TAda2D:
    """``build_model`` from a ``model`` config section given as a dict (as checkpoints store it)."""
    return build_model(section["name"], section["depth"], heads, width=section["width"],
                       num_frames=section["num_frames"], dropout=section["dropout"],
                       route_reduction=section["route_reduction"], route_kernels=tuple(section["route_kernels"]))


@dataclass
class LoadedClassifier:
    """A fine-tuned classifier rebuilt from its checkpoint.

    Attributes:
        model: the network in eval mode, on the requested device.
        classes: head name -> class names.
        config: the run config the checkpoint was trained with (plain dict).
        section: its ``model`` section (architecture and clip: ``num_frames``, ``interval``).
        sha256: SHA-256 of the checkpoint file (what feature stores record as ``checkpoint_sha256``).
        normalization: the frame statistics it was trained with.
    """

    model: TAda2D
    classes: dict[str, list[str]]
    config: dict
    section: dict
    sha256: str
    normalization: Normalization


def classifier_from_checkpoint(path: str | Path, device: str = "cpu", checkpoint: dict | None = None,
                               sha256: str = "") -> LoadedClassifier:
    """The one "model from checkpoint": used by extract, classify and detect.

    The architecture comes from the checkpoint's own config, so a run with another ``model``
    section still reads it right. Raises ``CheckpointError`` naming the file when it is not a
    whole classifier checkpoint. A checkpoint already in memory (from a model bundle) is passed as
    ``checkpoint`` with its file's ``sha256``; ``path`` then only names it.
    """
    if checkpoint is None:
        checkpoint, sha256 = read_checkpoint(path), file_sha256(path)
    section = dict(checkpoint["config"].get("model") or {})
    classes = checkpoint["classes"]
    model = build_from_section(section, {name: len(names) for name, names in classes.items()})
    load_weights(model, checkpoint, strict=True)
    model.to(device).eval()
    normalization = resolve_normalization({}, "checkpoint", section, Path(path).name)
    return LoadedClassifier(model, classes, checkpoint["config"], section, sha256, normalization)


def weights_normalization(model_section: dict, weights_path: str | Path, weights_format: str) -> Normalization:
    """The statistics that go with initial weights loaded from ``weights_path`` (``LoadReport.source_format``)."""
    recorded = read_checkpoint(weights_path)["config"].get("model") if weights_format == "checkpoint" else None
    return resolve_normalization(model_section, weights_format, recorded, Path(weights_path).name)


def load_classifier(checkpoint_path: str | Path, device: str = "cpu"):
    """``(model, classes, config dict)`` of a classifier checkpoint (``classifier_from_checkpoint``)."""
    loaded = classifier_from_checkpoint(checkpoint_path, device)
    return loaded.model, loaded.classes, loaded.config
