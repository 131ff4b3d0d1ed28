"""What detection runs: a trained run's classifier and BMN with the settings they were trained with.

Two sources, one ``DetectModel``:

* a run (``detect.model`` empty): the classifier checkpoint the run extracted with
  (``extract.checkpoint``, default ``<work_dir>/backbone/checkpoint.pt``), ``proposals/bmn.pt``, and
  the run's config (``--config RUN/config.yaml``);
* a bundle (``detect.model=model.pt``, ``formats.bundle``, written by ``--stage export``): both
  checkpoints and the run's config in one file, for another machine with no config file.

Either way the settings that shape the answers (dataset style, ``extract``, ``bmn``, ``classify``)
come from the trained run; ``runtime`` and ``detect`` come from the command line.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

from backbone.build import LoadedClassifier, classifier_from_checkpoint
from configs.load import config_from_dict, load_config_values
from configs.schema import Config, ConfigError
from formats.bundle import read_bundle, write_bundle
from formats.checkpoint import CheckpointError, read_checkpoint
from proposals.bmn import BMN
from proposals.train import bmn_from_checkpoint, read_bmn_checkpoint
from runstate.paths import RunPaths
from runstate.stamp import file_sha256

log = logging.getLogger(__name__)

# sections of the trained run's config that detection takes from it (the rest: from the command line)
TRAINED_SECTIONS = ("model", "extract", "bmn", "classify", "finetune")


@dataclass
class DetectModel:
    """The networks and the settings of one trained run.

    Attributes:
        config: the run's settings, with this command's ``runtime`` and ``detect`` sections.
        classifier: the fine-tuned clip classifier (weights, classes, clip, frame statistics, sha256).
        bmn: the proposal network, in eval mode on the CPU.
        bmn_sha256: identity of the BMN weights (for the resume fingerprint).
        source: where it came from (a run folder or a model.pt), for messages.
    """

    config: Config
    classifier: LoadedClassifier
    bmn: BMN
    bmn_sha256: str
    source: str


def config_from_bundle(bundle_path: str, overrides: list[str]) -> Config:
    """The config of ``--stage detect detect.model=model.pt`` without ``--config``: the run's settings from
    the bundle, writing beside it (``runtime.work_dir`` = the bundle's folder, unless overridden)."""
    try:
        bundle = read_bundle(bundle_path)
    except CheckpointError as error:
        raise ConfigError(f"detect.model: {error}") from None
    values = dict(bundle["config"])
    values["runtime"] = {**values.get("runtime", {}), "work_dir": str(Path(bundle_path).resolve().parent)}
    return load_config_values(values, overrides)


def classifier_checkpoint_path(cfg: Config, paths: RunPaths) -> Path:
    """The classifier the run's features were extracted with: ``extract.checkpoint`` or the finetune stage's."""
    return Path(cfg.extract.checkpoint) if cfg.extract.checkpoint else paths.checkpoint


def _with_trained_settings(command_cfg: Config, trained: dict) -> Config:
    """The trained run's sections (and dataset style) with the command's runtime, detect and dataset."""
    trained_cfg = config_from_dict(trained)
    sections = {name: getattr(trained_cfg, name) for name in TRAINED_SECTIONS}
    dataset = dataclasses.replace(command_cfg.dataset, style=trained_cfg.dataset.style)
    if command_cfg.dataset.source == "synthetic":
        dataset.synthetic = dataclasses.replace(command_cfg.dataset.synthetic, style=trained_cfg.dataset.style)
    return dataclasses.replace(command_cfg, dataset=dataset, **sections)


def load_detect_model(cfg: Config, paths: RunPaths) -> DetectModel:
    """The run's (or ``detect.model``'s) networks; ``FileNotFoundError`` naming what is missing."""
    if cfg.detect.model:
        bundle = read_bundle(cfg.detect.model)
        name = Path(cfg.detect.model).name
        classifier = classifier_from_checkpoint(f"{name} (classifier)", checkpoint=bundle["classifier"],
                                                sha256=bundle["classifier_sha256"])
        bmn = bmn_from_checkpoint(bundle["bmn"])
        return DetectModel(_with_trained_settings(cfg, bundle["config"]), classifier, bmn, file_sha256(
            cfg.detect.model), str(cfg.detect.model))
    checkpoint = classifier_checkpoint_path(cfg, paths)
    for path, stage in ((checkpoint, "finetune"), (paths.bmn_checkpoint, "bmn")):
        if not path.is_file():
            raise FileNotFoundError(f"detect: {path} not found; train the run first (--stage {stage}), or give "
                                    "an exported model with detect.model=model.pt")
    classifier = classifier_from_checkpoint(checkpoint)
    bmn = bmn_from_checkpoint(read_bmn_checkpoint(paths.bmn_checkpoint))
    return DetectModel(cfg, classifier, bmn, file_sha256(paths.bmn_checkpoint), str(paths.work_dir))


def run_export(cfg: Config, paths: RunPaths) -> None:
    """``--stage export``: ``<work_dir>/export/model.pt``, the run in one file (``formats.bundle``)."""
    checkpoint = classifier_checkpoint_path(cfg, paths)
    for path, stage in ((checkpoint, "finetune"), (paths.bmn_checkpoint, "bmn")):
        if not path.is_file():
            raise FileNotFoundError(f"export: {path} not found; run --stage {stage} first")
    config = dataclasses.asdict(cfg)
    write_bundle(paths.export_model, read_checkpoint(checkpoint, "classifier"), file_sha256(checkpoint),
                 read_bmn_checkpoint(paths.bmn_checkpoint), config)
    log.info("export: %s holds %s and %s with the run's settings; detect with "
             "python pipeline.py --stage detect detect.model=%s detect.videos=...",
             paths.export_model, checkpoint.name, paths.bmn_checkpoint.name, paths.export_model)
