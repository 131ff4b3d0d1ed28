"""``model.pt``: a trained run in one file, to hand over (``--stage export``, read by ``--stage detect``).

A ``torch.save`` dict, loadable with ``weights_only=True``:

| key | what |
| --- | --- |
| ``format_version`` | ``formats.checkpoint.FORMAT_VERSION`` |
| ``kind`` | ``"bundle"`` |
| ``classifier`` | the classifier's checkpoint dict (kind "classifier": weights, classes, clip, frame statistics) |
| ``classifier_sha256`` | SHA-256 of the checkpoint file it came from (what feature stores record) |
| ``bmn`` | the BMN checkpoint dict (kind "bmn": weights and constructor arguments) |
| ``config`` | the run's resolved config: dataset style, extract, bmn (input, post-processing) and classify settings |

Optimizer and scheduler states are dropped (detection does not train).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from formats.checkpoint import FORMAT_VERSION, CheckpointError, check_plain, load_file, upgrade
from runstate import atomic


def write_bundle(path: str | Path, classifier: dict, classifier_sha256: str, bmn: dict, config: dict) -> None:
    check_plain(config, "bundle: config")
    bundle = {
        "format_version": FORMAT_VERSION,
        "kind": "bundle",
        "classifier": {**classifier, "optimizer": None, "scheduler": None},
        "classifier_sha256": str(classifier_sha256),
        "bmn": {**bmn, "optimizer": None, "scheduler": None},
        "config": dict(config),
    }
    atomic.torch_save(path, bundle)


def read_bundle(path: str | Path) -> dict[str, Any]:
    """A bundle, checked (its two checkpoints too); ``CheckpointError`` naming the file otherwise."""
    bundle = load_file(path)
    if not isinstance(bundle, dict) or bundle.get("kind") != "bundle":
        raise CheckpointError(f"{path}: not a model bundle (python pipeline.py --stage export writes one)")
    if bundle.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: bundle format_version {bundle.get('format_version')!r}, this code reads "
                              f"{FORMAT_VERSION}")
    missing = [key for key in ("classifier", "classifier_sha256", "bmn", "config") if key not in bundle]
    if missing:
        raise CheckpointError(f"{path}: bundle lacks {missing}")
    bundle["classifier"] = upgrade(bundle["classifier"], f"{path} (classifier)", "classifier")
    bundle["bmn"] = upgrade(bundle["bmn"], f"{path} (bmn)", "bmn")
    return bundle
