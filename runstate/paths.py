"""Every folder and file a run writes under `runtime.work_dir`, named once.

Stage code never spells a file name of the work dir itself: it asks `RunPaths`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STAGES = ("finetune", "extract", "bmn", "classify", "eval")


@dataclass(frozen=True)
class RunPaths:
    """The layout of a work dir (DESIGN.md "The stages")."""

    work_dir: Path

    @property
    def config_yaml(self) -> Path:
        return self.work_dir / "config.yaml"

    @property
    def logs_dir(self) -> Path:
        return self.work_dir / "logs"

    def log_file(self, stage: str) -> Path:
        return self.logs_dir / f"{stage}.log"

    @property
    def locks_dir(self) -> Path:
        return self.work_dir / "locks"

    def lock_file(self, stage: str) -> Path:
        """Held while `stage` runs (`runstate.lock.stage_lock`)."""
        return self.locks_dir / f"{stage}.lock"

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes into (and its completion stamp `.done.json`)."""
        return {"finetune": self.backbone_dir, "extract": self.features_dir, "bmn": self.proposals_dir,
                "classify": self.detections_dir, "eval": self.eval_dir, "export": self.export_dir,
                "detect": self.detect_dir}[stage]

    # finetune
    @property
    def backbone_dir(self) -> Path:
        return self.work_dir / "backbone"

    @property
    def checkpoint(self) -> Path:
        """The best fine-tuned clip classifier (by validation accuracy)."""
        return self.backbone_dir / "checkpoint.pt"

    @property
    def backbone_last(self) -> Path:
        """The state after the latest finished epoch (resume)."""
        return self.backbone_dir / "last.pt"

    @property
    def backbone_metrics(self) -> Path:
        return self.backbone_dir / "metrics.jsonl"

    # extract
    @property
    def features_dir(self) -> Path:
        return self.work_dir / "features"

    @property
    def features_h5(self) -> Path:
        return self.features_dir / "features.h5"

    @property
    def failed_videos(self) -> Path:
        """Videos the extract stage could not read (`formats.failures`)."""
        return self.features_dir / "failed.tsv"

    # bmn
    @property
    def proposals_dir(self) -> Path:
        return self.work_dir / "proposals"

    @property
    def bmn_checkpoint(self) -> Path:
        return self.proposals_dir / "bmn.pt"

    @property
    def bmn_last(self) -> Path:
        """The state after the latest finished epoch (resume)."""
        return self.proposals_dir / "last.pt"

    @property
    def bmn_metrics(self) -> Path:
        return self.proposals_dir / "metrics.jsonl"

    @property
    def proposals_json(self) -> Path:
        return self.proposals_dir / "proposals.json"

    # classify
    @property
    def detections_dir(self) -> Path:
        return self.work_dir / "detections"

    @property
    def submission_json(self) -> Path:
        return self.detections_dir / "submission.json"

    @property
    def detections_journal(self) -> Path:
        """One line per classified video: what a rerun resumes from."""
        return self.detections_dir / "partial.jsonl"

    @property
    def failed_detections(self) -> Path:
        """Videos the classify stage could not classify (`formats.failures`)."""
        return self.detections_dir / "failed.tsv"

    # eval
    @property
    def eval_dir(self) -> Path:
        return self.work_dir / "eval"

    @property
    def metrics_json(self) -> Path:
        return self.eval_dir / "metrics.json"

    @property
    def report_md(self) -> Path:
        return self.eval_dir / "report.md"

    # export
    @property
    def export_dir(self) -> Path:
        return self.work_dir / "export"

    @property
    def export_model(self) -> Path:
        """The run in one file (`formats.bundle`)."""
        return self.export_dir / "model.pt"

    # detect
    @property
    def detect_dir(self) -> Path:
        """Where `--stage detect` writes unless `detect.output` says otherwise (`DetectPaths`)."""
        return self.work_dir / "detect"

    @classmethod
    def from_config(cls, cfg) -> RunPaths:
        return cls(Path(cfg.runtime.work_dir))


@dataclass(frozen=True)
class DetectPaths:
    """The files of one detection output folder (`detect.output`, default `<work_dir>/detect`)."""

    folder: Path

    @classmethod
    def of_run(cls, output: str, paths: RunPaths) -> DetectPaths:
        """The folder ``detect.output`` names, or ``<work_dir>/detect`` when it is empty."""
        return cls(Path(output) if output else paths.detect_dir)

    @property
    def config_yaml(self) -> Path:
        """The settings detection ran with (the trained run's, with this command's detect section)."""
        return self.folder / "config.yaml"

    @property
    def features_h5(self) -> Path:
        return self.folder / "features.h5"

    @property
    def journal(self) -> Path:
        """One line per finished video (resume)."""
        return self.folder / "partial.jsonl"

    @property
    def failed(self) -> Path:
        return self.folder / "failed.tsv"

    @property
    def detections_json(self) -> Path:
        """The detections in the run's submission format (the file to upload for a test split)."""
        return self.folder / "detections.json"

    @property
    def detections_csv(self) -> Path:
        return self.folder / "detections.csv"

    @property
    def viewer_html(self) -> Path:
        return self.folder / "viewer.html"
