"""Every folder and file a run writes under `runtime.work_dir`, named once."""

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

    # finetune
    @property
    def backbone_dir(self) -> Path:
        return self.work_dir / "backbone"

    @property
    def checkpoint(self) -> Path:
        """The best fine-tuned clip classifier (by validation accuracy)."""
        return self.backbone_dir / "checkpoint.pt"

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
        return self.features_dir / "failed.tsv"

    # bmn
    @property
    def proposals_dir(self) -> Path:
        return self.work_dir / "proposals"

    @property
    def bmn_checkpoint(self) -> Path:
        return self.proposals_dir / "bmn.pt"

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
