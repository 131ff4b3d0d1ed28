"""The pipeline's ``eval`` stage: score the run's ``submission.json`` (detection average mAP) and
``proposals.json`` (AR@AN), write ``eval/metrics.json`` and, when ``eval.report`` is on,
``eval/report.md`` with its plots.

Reads ``cfg.dataset`` (ground truth through :func:`data.dataset.load_dataset`) and ``cfg.eval``
(``subset``, ``tiou_thresholds`` for detection — empty means the dataset's protocol — and
``report``). Proposals are always scored at ActivityNet's 0.5:0.05:0.95, as BMN reports them.
A run whose inputs and settings have not changed since the last complete one does nothing.
"""

from __future__ import annotations

import logging

from configs.schema import Config
from data.dataset import load_dataset
from evaluation.evaluate import (
    detection_table,
    evaluate_detections,
    evaluate_proposal_file,
    proposal_table,
    write_metrics,
)
from runstate.paths import RunPaths
from runstate.stamp import check_complete, file_identity, fingerprint, mark_complete

log = logging.getLogger(__name__)


def run_eval(cfg: Config, paths: RunPaths) -> None:
    """Evaluate what the earlier stages wrote; raises FileNotFoundError when neither file exists."""
    submission, proposals = paths.submission_json, paths.proposals_json
    if not submission.is_file() and not proposals.is_file():
        raise FileNotFoundError(f"eval: neither {submission} nor {proposals} exists; "
                                "run the classify (or bmn) stage first")
    annotation_files = [file_identity(path) for path in cfg.dataset.annotations.values()]
    digest = fingerprint("eval", cfg.dataset, cfg.eval, annotation_files,
                         file_identity(submission), file_identity(proposals))
    stamp_check = check_complete(paths.eval_dir, digest)
    if stamp_check:
        log.info("eval: %s is up to date with its inputs (verified); nothing to do", paths.metrics_json)
        return
    if stamp_check.damaged:
        log.warning("eval: %s; evaluating again", stamp_check.reason)

    annotations = load_dataset(cfg)
    metrics: dict = {}
    detection = proposal_result = None
    if submission.is_file():
        detection = evaluate_detections(cfg.dataset.style, annotations, submission, cfg.eval.subset,
                                        cfg.eval.tiou_thresholds or None)
        metrics.update(detection.to_metrics())
        log.info("eval: detection mAP (%%) of %s\n%s", submission, detection_table(detection.results))
    else:
        log.warning("eval: %s not found; scoring proposals only", submission)
    if proposals.is_file():
        proposal_result = evaluate_proposal_file(annotations, proposals, cfg.eval.subset)
        metrics["proposals"] = proposal_result.to_metrics()
        log.info("eval: proposals (%%) of %s\n%s", proposals, proposal_table(proposal_result))

    write_metrics(paths.metrics_json, metrics)
    outputs = [paths.metrics_json]
    if cfg.eval.report:
        from evaluation.report import write_report  # here: matplotlib loads only for a report

        title = f"Evaluation of {paths.work_dir}"
        durations = dict(zip(annotations.videos["video_id"], annotations.videos["duration"]))
        report = write_report(paths.eval_dir, detection, proposal_result, title=title, video_durations=durations)
        outputs.append(report)
        log.info("eval: report written to %s", report)
    mark_complete(paths.eval_dir, digest, outputs)
