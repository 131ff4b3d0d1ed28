"""Untrimmed videos in, scored action detections out: the command line.

    python pipeline.py [--config configs/synthetic.yaml] --stage STAGE [section.key=value ...]

Stages (each reads only what earlier stages wrote under `runtime.work_dir`):

    finetune  fine-tune the TAda2D (or TSN) clip classifier on trimmed action segments
    extract   sliding-window clip features of every video -> features/features.h5
    bmn       train BMN on the features, write class-agnostic proposals/proposals.json
    classify  classify the proposals -> detections/submission.json (leaderboard format)
    eval      average mAP and proposal AR@AN -> eval/metrics.json, report.md, plots
    all       the five in order

This file only wires things: it parses arguments, loads and checks the config, sets up
logging, takes the stage's lock (`runstate.lock`: a second run of a running stage on the
same work dir stops at once), and calls each stage's `run_<stage>(cfg, paths)` from its package.

Exit status: 0 done; 1 a stage failed, or some items failed (`failed.tsv`); 2 config error;
3 stage not implemented; 4 the stage is already running (lock held).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable

# OpenMP threads that spin while they wait for each other fall off a cliff when other processes share
# the cores (measured 8x slower on the 2-core machine at load 7); passive waiting costs little when
# they do not. Set before torch loads its OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from configs.load import config_yaml, load_config
from configs.schema import Config, ConfigError
from runstate import atomic
from runstate.lock import LockHeld, stage_lock
from runstate.paths import STAGES, DetectPaths, RunPaths
from runstate.runtime import PartialFailure, retain_freed_memory, setup_logging

DEFAULT_CONFIG = "configs/synthetic.yaml"
log = logging.getLogger("pipeline")


class StageNotImplemented(RuntimeError):
    """The stage's package has not been written yet."""


def _import_stage(module: str, function: str) -> Callable[[Config, RunPaths], None]:
    import importlib

    try:
        return getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as error:
        if error.name == module:
            raise StageNotImplemented(f"{module}.{function} is not implemented yet") from None
        raise


# One explicit entry per stage: (module, function, one line for --help).
STAGE_FUNCTIONS: dict[str, tuple[str, str, str]] = {
    "finetune": ("backbone.finetune", "run_finetune", "fine-tune the TAda2D/TSN clip classifier"),
    "extract": ("features.extract", "run_extract", "sliding-window clip features to features.h5"),
    "bmn": ("proposals.stage", "run_bmn", "train BMN, write proposals.json"),
    "classify": ("localize.stage", "run_classify", "classify proposals, write submission.json"),
    "eval": ("evaluation.stage", "run_eval", "average mAP and AR@AN, metrics.json and report"),
}
assert tuple(STAGE_FUNCTIONS) == STAGES
# Run by name, not part of --stage all: they use a trained run.
NAMED_STAGES: dict[str, tuple[str, str, str]] = {
    "detect": ("detect.stage", "run_detect", "a trained run on new videos: detections.json/.csv, viewer.html"),
    "export": ("detect.model", "run_export", "the trained run in one file: export/model.pt"),
}


def build_parser() -> argparse.ArgumentParser:
    stage_help = "\n".join(f"  {name:<9} {line}" for name, (_, _, line) in {**STAGE_FUNCTIONS, **NAMED_STAGES}.items())
    parser = argparse.ArgumentParser(
        prog="pipeline.py",
        description="TAda2D temporal action localization: videos in, scored detections out.",
        epilog=f"stages:\n{stage_help}\n  {'all':<9} the five training stages in order (not detect, export)\n\n"
               "overrides: section.key=value with YAML values, e.g. bmn.lr=1e-3 extract.fps=30 "
               "dataset.subsets=[validation]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", default=None,
                        help=f"YAML config (default: {DEFAULT_CONFIG}; for --stage detect with detect.model=model.pt, "
                             "the settings inside model.pt)")
    parser.add_argument("--stage", required=True, choices=[*STAGE_FUNCTIONS, *NAMED_STAGES, "all"],
                        help="which stage to run")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    return parser


def run_stage(stage: str, cfg: Config, paths: RunPaths) -> None:
    """Run one stage under its lock, logging to ``logs/<stage>.log`` (raises ``LockHeld`` when running)."""
    module, function, _ = {**STAGE_FUNCTIONS, **NAMED_STAGES}[stage]
    stage_function = _import_stage(module, function)
    output_dir = DetectPaths.of_run(cfg.detect.output, paths).folder if stage == "detect" else paths.stage_dir(stage)
    with stage_lock(paths.lock_file(stage), stage, cfg.runtime.device, output_dir=output_dir):
        handler = setup_logging(paths.log_file(stage), rank=_rank())
        try:
            log.info("== stage %s ==", stage)
            stage_function(cfg, paths)
        finally:
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                handler.close()


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def main(argv: list[str] | None = None) -> int:
    # intermixed: overrides may stand before or after --stage
    args = build_parser().parse_intermixed_args(argv)
    retain_freed_memory()  # tensors' memory reused in place instead of fresh pages for every pass
    setup_logging(rank=_rank())
    try:
        cfg = _load_config(args)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 2
    paths = RunPaths.from_config(cfg)
    try:
        if _rank() == 0 and args.stage not in ("detect", "export"):  # those leave the trained run's record be
            atomic.write_text(paths.config_yaml, config_yaml(cfg))
        needs_dataset = args.stage not in ("detect", "export") or bool(cfg.detect.subset)
        if cfg.dataset.source == "synthetic" and needs_dataset:  # generated once, then cached by its parameters
            from data.dataset import resolve_dataset_files

            resolve_dataset_files(cfg)
    except OSError as error:  # a read-only or full work dir / cache: one line, nothing started
        print(f"cannot start: {_one_line(error)}", file=sys.stderr)
        return 1
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    timings, partial_failures = [], []
    for stage in stages:
        start = time.perf_counter()
        try:
            run_stage(stage, cfg, paths)
        except StageNotImplemented as error:
            print(f"stage {stage}: {error}", file=sys.stderr)
            return 3
        except LockHeld as error:  # another run is doing this stage: touch nothing
            print(f"stage {stage} not started: {error}", file=sys.stderr)
            return 4
        except PartialFailure as error:  # the rest of the batch is done: later stages use it
            print(f"stage {stage}: {error}", file=sys.stderr)
            partial_failures.append(stage)
        except (ConfigError, OSError, ValueError, RuntimeError) as error:
            print(f"stage {stage} failed: {type(error).__name__}: {_one_line(error)}", file=sys.stderr)
            return 1
        timings.append((stage, time.perf_counter() - start))
    if len(timings) > 1 and _rank() == 0:
        print(summary(cfg, paths, timings))
    if partial_failures:
        if len(stages) > 1:
            print(f"some items failed in: {', '.join(partial_failures)} (see the failed.tsv files)", file=sys.stderr)
        return 1
    return 0


def _load_config(args: argparse.Namespace) -> Config:
    """``--config`` with the overrides; without ``--config``, ``detect.model=model.pt`` brings its own settings."""
    bundle = next((text.partition("=")[2] for text in args.overrides if text.startswith("detect.model=")), "")
    if args.config is None and args.stage == "detect" and bundle:
        from detect.model import config_from_bundle

        return config_from_bundle(bundle, args.overrides)
    return load_config(args.config or DEFAULT_CONFIG, args.overrides)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 2000 else text[:2000] + " ..."


def summary(cfg: Config, paths: RunPaths, timings: list[tuple[str, float]]) -> str:
    """The closing table of `--stage all`: mAP per threshold, proposal AR, where the outputs are."""
    import json

    lines = ["", f"== results ({cfg.dataset.style} protocol, subset {cfg.eval.subset}) =="]
    if paths.metrics_json.is_file():
        metrics = json.loads(paths.metrics_json.read_text())
        tasks = {t: metrics[t] for t in ("verb", "noun", "action") if t in metrics}
        if "average_mAP" in metrics:
            tasks = {"mAP": metrics}
        for name, task in tasks.items():
            cells = "  ".join(f"{t:.2f}:{m * 100:5.2f}" for t, m in zip(task["tiou_thresholds"], task["mAP"]))
            lines.append(f"{name:<7} average mAP {task['average_mAP'] * 100:6.2f}   (tIoU:mAP %  {cells})")
        if "proposals" in metrics:
            p = metrics["proposals"]
            lines.append(f"proposals AR@100 {p['AR@100'] * 100:6.2f}   AUC {p['AUC'] * 100:6.2f}")
    outputs = [("config", paths.config_yaml), ("checkpoint", paths.checkpoint), ("features", paths.features_h5),
               ("proposals", paths.proposals_json), ("submission", paths.submission_json),
               ("metrics", paths.metrics_json), ("report", paths.report_md), ("logs", paths.logs_dir)]
    lines += [f"{name:<11} {path}" for name, path in outputs if path.exists()]
    lines.append("timings    " + ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in timings)
                 + f"  (total {sum(t for _, t in timings):.1f}s)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
