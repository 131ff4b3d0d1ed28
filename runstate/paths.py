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
                "classify": self.detections_dir, "eval": self.eval_dir}[stage]

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

    @classmethod
    def from_config(cls, cfg) -> RunPaths:
        return cls(Path(cfg.runtime.work_dir))
