"""Command line: score a submission (or proposal) file against ground truth, without a config.

    python -m evaluation --dataset hacs|ek100 --ground-truth FILE --predictions FILE
        [--subset validation] [--output metrics.json] [--report DIR] [--proposals]
        [--verb-classes CSV] [--noun-classes CSV] [--tiou-thresholds T ...] [--workers N]

Prints the table in percent and writes metrics.json in fractions (by default beside the
predictions file). An invalid input file ends with one line on stderr and exit status 2. Only
``--report`` imports the plotting code (matplotlib), which costs more than a whole evaluation.
Ground truth (HACS JSON, EK100 CSV) and predictions are read into numpy columns and scored as they
are: pandas (half a second to import) is imported only by ``--report`` and an EK100 pickle. A
leaderboard-size file is read and scored in one process per usable CPU (``--workers``;
``runstate.parts``), with the same numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data.ek100_csv import read_ek100_csv
from data.errors import AnnotationError
from data.hacs_json import read_hacs_json
from evaluation.evaluate import (
    STYLES,
    GroundTruth,
    detection_table,
    evaluate_detections,
    evaluate_proposal_file,
    proposal_table,
    write_metrics,
)
from formats.submission import EK100_NUM_NOUNS, EK100_NUM_VERBS

EK100_VERB_CLASSES = "EPIC_100_verb_classes.csv"
EK100_NOUN_CLASSES = "EPIC_100_noun_classes.csv"
EXIT_INVALID_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation",
        description="Average mAP of temporal action detections (HACS/ActivityNet or EK100 protocol), "
                    "or AR@AN of proposals.",
    )
    parser.add_argument("--dataset", required=True, choices=STYLES, help="protocol and file formats")
    parser.add_argument("--ground-truth", required=True, type=Path,
                        help="HACS/ActivityNet JSON, or EK100 CSV/pickle of the evaluated subset")
    parser.add_argument("--predictions", required=True, type=Path,
                        help="submission JSON (or proposals JSON with --proposals)")
    parser.add_argument("--subset", default="validation", help="evaluated subset (default: validation)")
    parser.add_argument("--output", type=Path, default=None,
                        help="metrics JSON to write (default: metrics.json beside --predictions)")
    parser.add_argument("--report", type=Path, default=None, help="folder for report.md and plots")
    parser.add_argument("--proposals", action="store_true",
                        help="score class-agnostic proposals (AR@AN, AUC) instead of detections")
    parser.add_argument("--verb-classes", type=Path, default=None,
                        help=f"EK100 verb class CSV (default: {EK100_VERB_CLASSES} beside the ground truth)")
    parser.add_argument("--noun-classes", type=Path, default=None,
                        help=f"EK100 noun class CSV (default: {EK100_NOUN_CLASSES} beside the ground truth)")
    parser.add_argument("--tiou-thresholds", type=float, nargs="+", default=None,
                        help="override the protocol's tIoU thresholds")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes to read and score in (default 0: one per 8 MB of predictions, "
                             "100,000 predictions and usable CPU, at most 4; 1: this process only)")
    return parser


def load_ground_truth(args: argparse.Namespace) -> GroundTruth:
    """HACS JSON (as columns), or EK100 CSV with class lists found beside it (else EK100's 97 verbs /
    300 nouns)."""
    if args.dataset == "hacs":
        return read_hacs_json(args.ground_truth)
    verb_csv = args.verb_classes or _beside(args.ground_truth, EK100_VERB_CLASSES)
    noun_csv = args.noun_classes or _beside(args.ground_truth, EK100_NOUN_CLASSES)
    annotations = read_ek100_csv(args.ground_truth, verb_csv, noun_csv, subset=args.subset)
    # Without class files the loader numbers only the classes it saw; the action id and the id
    # checks need the full counts, so pad to EK100's (or further, for larger custom data).
    for head, csv, count in (("verb", verb_csv, EK100_NUM_VERBS), ("noun", noun_csv, EK100_NUM_NOUNS)):
        if csv is None and len(annotations.classes[head]) < count:
            seen = annotations.classes[head]
            annotations.classes[head] = seen + [f"{head}_{i}" for i in range(len(seen), count)]
    return annotations


def _beside(path: Path, name: str) -> Path | None:
    candidate = path.parent / name
    return candidate if candidate.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output = args.output or args.predictions.with_name("metrics.json")
    try:
        annotations = load_ground_truth(args)
        if args.proposals:
            result = evaluate_proposal_file(annotations, args.predictions, args.subset, args.tiou_thresholds,
                                            workers=args.workers or None)
            print(proposal_table(result))
            metrics = {"proposals": result.to_metrics()}
            detection, proposals = None, result
        else:
            detection = evaluate_detections(args.dataset, annotations, args.predictions, args.subset,
                                            args.tiou_thresholds, args.workers or None)
            print(detection_table(detection.results))
            metrics, proposals = detection.to_metrics(), None
    except (AnnotationError, ValueError, OSError) as error:  # SubmissionError/LabelError are ValueErrors
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    write_metrics(output, metrics)
    print(f"metrics written to {output}")
    if args.report is not None:
        from evaluation.report import write_report  # here: matplotlib loads only for a report

        title = f"Evaluation of {args.predictions.name}"
        report = write_report(args.report, detection, proposals, title=title,
                              video_durations=annotations.video_durations())
        print(f"report written to {report}")
    return 0
