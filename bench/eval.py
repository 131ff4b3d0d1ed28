"""Benchmark: leaderboard-size evaluation, from the files to the numbers.

    python bench/eval.py [--runs 3] [--reference-fraction 0.02] [--seed 0] [--baseline-tree DIR]
                         [--keep DIR] [--sets hacs,proposals,ek100]

Three sets are generated (seeded) as files in a temporary folder (or ``--keep DIR``):

* **hacs**: 7,500 validation videos with 1-4 ground-truth segments each, 200 classes, in a HACS
  JSON; a submission of 100 predictions per video (750,000).
* **proposals**: the same ground truth; 100 class-agnostic proposals per video (750,000).
* **ek100**: 138 videos with 70 ground-truth actions each (9,660) in an EK100 CSV, 97 verbs and
  300 nouns; a submission of 2,000 predictions per video (276,000), three tasks.

For each set, in this process, each stage is run ``--runs`` times, alternating with its baseline,
and the medians and their ratio are printed:

* read: the file into prediction columns (what the command line scores; the loaders' tables are
  made of them) the typed way (msgspec records) in this process, against ``json.load`` plus the
  validating way (the checks on dicts, which name the first bad entry and which every rejected
  file goes through); then the typed way as it runs by default, in one process per 8 MB and
  usable CPU (``runstate.parts``), against this process alone;
* score: the vectorized metrics on the columns as the command line runs them (HACS: the classes
  split over one process per 100,000 predictions and usable CPU; EK100: its tasks; proposals: the
  videos, one process per 200,000 kept proposals), against this process alone.

Then the whole command (``python -m evaluation ...``) as a subprocess, by default and with
``--workers 1``, alternating: median wall time and the largest peak RSS over ``--runs`` runs.
With ``--baseline-tree DIR`` (a checkout of an earlier version, e.g. ``git worktree add /tmp/base
<commit>``) the same command runs from there too, and the ratio and whether both wrote the same
metrics.json are printed.
Last, the loop-by-loop reference (evaluation/reference.py) runs on the first
``--reference-fraction`` of the videos and the largest |ours - reference| is printed, with whether
the AP equals the official ``interpolated_prec_rec`` arithmetic bit for bit.

The official ActivityNet evaluator cannot run here (not installed, no downloads); on the HACS set
the issue measured 98 s for it (n_jobs=2), quoted as context only. Nothing here is a test
threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data.annotations import ek100_annotations, hacs_annotations  # noqa: E402
from data.hacs_json import read_hacs_json  # noqa: E402
from evaluation.cli import build_parser, load_ground_truth  # noqa: E402
from evaluation.detection import (  # noqa: E402
    EK100_TIOU_THRESHOLDS,
    HACS_TIOU_THRESHOLDS,
    average_precision,
)
from evaluation.evaluate import score_detections, score_proposals  # noqa: E402
from evaluation.proposal import PROPOSAL_TIOU_THRESHOLDS, average_recall  # noqa: E402
from evaluation.reference import (  # noqa: E402
    average_precision_table,
    average_recall_curve,
    official_interpolated_ap,
)
from formats import proposals as proposals_format  # noqa: E402
from formats import submission  # noqa: E402
from runstate.parts import default_parts  # noqa: E402

OFFICIAL_HACS_SECONDS = 98.0  # the measurement of the official evaluator on the HACS set
HACS_VIDEOS, HACS_PREDICTIONS_PER_VIDEO, HACS_CLASSES = 7500, 100, 200
EK100_VIDEOS, EK100_GT_PER_VIDEO, EK100_PREDICTIONS_PER_VIDEO = 138, 70, 2000
EK100_VERBS, EK100_NOUNS = 97, 300


# ---------------------------------------------------------------------------------------------
# The sets


def jittered(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, scale: float):
    """Segments near the given ones: boundaries moved by up to ``scale`` x the length (seconds)."""
    length = end - start
    new_start = start + rng.uniform(-scale, scale, len(start)) * length
    new_end = end + rng.uniform(-scale, scale, len(start)) * length
    return np.minimum(new_start, new_end - 0.1), np.maximum(new_end, new_start + 0.1)


def hacs_scale(rng: np.random.Generator, num_videos: int, preds_per_video: int, num_classes: int):
    """One class per video, 1-4 instances; 60% of predictions near ground truth, 70% with the video's
    class. Returns (ground truth ``video_id, start, end, label, duration``, predictions ``video_id,
    start, end, label, score``)."""
    duration = rng.uniform(30, 240, num_videos)
    video_class = rng.integers(0, num_classes, num_videos)
    per_video = rng.integers(1, 5, num_videos)
    gt_video = np.repeat(np.arange(num_videos), per_video)
    length = rng.uniform(0.05, 0.4, len(gt_video)) * duration[gt_video]
    gt_start = rng.uniform(0, 1, len(gt_video)) * (duration[gt_video] - length)
    ground_truth = pd.DataFrame({"video_id": [f"v_{i:05d}" for i in gt_video], "start": gt_start,
                                 "end": gt_start + length, "label": video_class[gt_video],
                                 "duration": duration[gt_video]})

    pred_video = np.repeat(np.arange(num_videos), preds_per_video)
    near = rng.random(len(pred_video)) < 0.6
    # a random ground-truth segment of the same video for the "near" predictions
    first_gt = np.cumsum(per_video) - per_video
    source = first_gt[pred_video] + (rng.random(len(pred_video)) * per_video[pred_video]).astype(int)
    start, end = jittered(rng, gt_start[source], gt_start[source] + length[source], 0.3)
    random_length = rng.uniform(0.02, 0.5, len(pred_video)) * duration[pred_video]
    random_start = rng.uniform(0, 1, len(pred_video)) * (duration[pred_video] - random_length)
    start = np.where(near, start, random_start)
    end = np.where(near, end, random_start + random_length)
    label = np.where(rng.random(len(pred_video)) < 0.7, video_class[pred_video],
                     rng.integers(0, num_classes, len(pred_video)))
    # scores on a 1/1000 grid, so that equal scores (ties) are common, as in real submissions
    score = np.round(rng.random(len(pred_video)), 3)
    predictions = pd.DataFrame({"video_id": [f"v_{i:05d}" for i in pred_video], "start": start, "end": end,
                                "label": label, "score": score})
    return ground_truth, predictions


def ek100_scale(rng: np.random.Generator, num_videos: int, gt_per_video: int, preds_per_video: int):
    """Many short, overlapping actions per video; verb and noun ids skewed as in EK100."""
    duration = rng.uniform(300, 1500, num_videos)
    gt_video = np.repeat(np.arange(num_videos), gt_per_video)
    length = rng.exponential(3.5, len(gt_video)) + 0.5
    gt_start = rng.uniform(0, 1, len(gt_video)) * (duration[gt_video] - length)
    verb = np.minimum(rng.zipf(1.6, len(gt_video)) - 1, EK100_VERBS - 1)
    noun = np.minimum(rng.zipf(1.3, len(gt_video)) - 1, EK100_NOUNS - 1)
    ground_truth = pd.DataFrame({"video_id": [f"P{i:03d}_01" for i in gt_video], "start": gt_start,
                                 "end": gt_start + length, "verb": verb, "noun": noun})
    pred_video = np.repeat(np.arange(num_videos), preds_per_video)
    source = pred_video * gt_per_video + rng.integers(0, gt_per_video, len(pred_video))
    start, end = jittered(rng, gt_start[source], gt_start[source] + length[source], 0.4)
    right_verb = rng.random(len(pred_video)) < 0.5
    right_noun = rng.random(len(pred_video)) < 0.4
    pred_verb = np.where(right_verb, verb[source], np.minimum(rng.zipf(1.6, len(pred_video)) - 1, 96))
    pred_noun = np.where(right_noun, noun[source], np.minimum(rng.zipf(1.3, len(pred_video)) - 1, 299))
    predictions = pd.DataFrame({"video_id": [f"P{i:03d}_01" for i in pred_video], "start": start, "end": end,
                                "score": np.round(rng.random(len(pred_video)), 3), "verb": pred_verb,
                                "noun": pred_noun})
    return ground_truth, predictions


def class_names(count: int) -> list[str]:
    return [f"Class {i:03d}" for i in range(count)]


def write_hacs_files(folder: Path, ground_truth: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, Path]:
    """HACS ground truth, submission and proposals JSON files, as the official tools write them."""
    names = class_names(HACS_CLASSES)
    database: dict[str, dict] = {}
    for video_id, start, end, label, duration in zip(
        ground_truth["video_id"], ground_truth["start"].tolist(), ground_truth["end"].tolist(),
        ground_truth["label"].tolist(), ground_truth["duration"].tolist(),
    ):
        entry = database.setdefault(video_id, {"subset": "validation", "duration": duration, "annotations": []})
        entry["annotations"].append({"label": names[label], "segment": [start, end]})
    detections: dict[str, list] = {}
    proposals: dict[str, list] = {}
    for video_id, start, end, label, score in zip(
        predictions["video_id"], predictions["start"].tolist(), predictions["end"].tolist(),
        predictions["label"].tolist(), predictions["score"].tolist(),
    ):
        detections.setdefault(video_id, []).append({"label": names[label], "score": score, "segment": [start, end]})
        proposals.setdefault(video_id, []).append({"segment": [start, end], "score": score})
    paths = {"ground_truth": folder / "hacs_gt.json", "submission": folder / "hacs_submission.json",
             "proposals": folder / "proposals.json"}
    paths["ground_truth"].write_text(json.dumps({"version": "1.1.1", "taxonomy": [], "database": database}))
    paths["submission"].write_text(json.dumps({"version": "VERSION 1.3", "external_data": {"used": False},
                                               "results": detections}))
    paths["proposals"].write_text(json.dumps({"version": "1.0", "results": proposals}))
    return paths


def timestamp(seconds: float) -> str:
    """Seconds -> EK100's ``HH:MM:SS.ff``."""
    minutes, secs = divmod(round(seconds * 100) / 100, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{secs:05.2f}"


def write_ek100_files(folder: Path, ground_truth: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, Path]:
    """EK100 validation CSV and an action-detection submission JSON."""
    paths = {"ground_truth": folder / "EPIC_100_validation.csv", "submission": folder / "ek100_submission.json"}
    table = pd.DataFrame({
        "narration_id": [f"{v}_{i}" for i, v in enumerate(ground_truth["video_id"])],
        "participant_id": [v.split("_")[0] for v in ground_truth["video_id"]],
        "video_id": ground_truth["video_id"],
        "start_timestamp": [timestamp(s) for s in ground_truth["start"]],
        "stop_timestamp": [timestamp(e) for e in ground_truth["end"]],
        "verb_class": ground_truth["verb"],
        "noun_class": ground_truth["noun"],
    })
    table.to_csv(paths["ground_truth"], index=False)
    results: dict[str, list] = {}
    for video_id, start, end, score, verb, noun in zip(
        predictions["video_id"], predictions["start"].tolist(), predictions["end"].tolist(),
        predictions["score"].tolist(), predictions["verb"].tolist(), predictions["noun"].tolist(),
    ):
        results.setdefault(video_id, []).append({"verb": verb, "noun": noun, "action": f"{verb},{noun}",
                                                 "score": score, "segment": [start, end]})
    paths["submission"].write_text(json.dumps({"version": "0.2", "challenge": "action_detection", "sls_pt": 2,
                                               "sls_tl": 3, "sls_td": 3, "results": results}))
    return paths


# ---------------------------------------------------------------------------------------------
# Timing


class Timing:
    """Wall and CPU seconds of repeated runs; reports medians."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, function):
        wall, cpu = time.perf_counter(), time.process_time()
        value = function()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)
        return value

    @property
    def median(self) -> tuple[float, float]:
        return statistics.median(self.wall), statistics.median(self.cpu)


def alternating(first, second, runs: int) -> tuple[Timing, Timing, object, object]:
    """Run ``first`` and ``second`` alternately, ``runs`` times each: their timings and last values."""
    timings, values = (Timing(), Timing()), [None, None]
    for _ in range(runs):
        for index, function in enumerate((first, second)):
            values[index] = timings[index].run(function)
    return timings[0], timings[1], values[0], values[1]


TIME_COMMAND = Path("/usr/bin/time")  # GNU time: the peak RSS of exactly its child


def run_command(arguments: list[str], tree: Path) -> tuple[float, float, float | None]:
    """``python -m evaluation ARGUMENTS`` from ``tree``: (wall s, CPU s, peak RSS MB or None).

    The peak RSS comes from GNU time, whose child is forked from it: a child forked from this
    (large) process would report this process's size as its own high-water mark."""
    with tempfile.TemporaryDirectory() as scratch:
        rss_file, error_file = Path(scratch) / "rss", Path(scratch) / "stderr"
        command = [sys.executable, "-m", "evaluation", *arguments]
        if TIME_COMMAND.exists():
            command = [str(TIME_COMMAND), "-f", "%M", "-o", str(rss_file), *command]
        begin = time.perf_counter()
        with open(error_file, "wb") as errors:
            process = subprocess.Popen(command, cwd=tree, stdout=subprocess.DEVNULL, stderr=errors)
            _, status, usage = os.wait4(process.pid, 0)  # the usage includes the child of GNU time
        wall = time.perf_counter() - begin
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"python -m evaluation {' '.join(arguments)} (in {tree}) failed: "
                               f"{error_file.read_text()}")
        rss = float(rss_file.read_text().split()[-1]) / 1024 if rss_file.exists() else None  # KB -> MB
    return wall, usage.ru_utime + usage.ru_stime, rss


def whole_process(name: str, arguments: list[str], folder: Path, runs: int, baseline_tree: Path | None) -> None:
    """Median wall and CPU time and peak RSS of the command as it runs by default (reading and
    scoring in one process per usable CPU), against ``--workers 1`` (one process) and, when given,
    the baseline tree's command, alternating."""
    variants = {"ours": (REPO, []), "one process": (REPO, ["--workers", "1"])}
    if baseline_tree is not None:
        variants["baseline"] = (baseline_tree, [])
    outputs = {key: folder / f"{name}_metrics_{index}.json" for index, key in enumerate(variants)}
    measured: dict[str, list[tuple[float, float, float | None]]] = {key: [] for key in variants}
    for _ in range(runs):
        for key, (tree, extra) in variants.items():
            measured[key].append(run_command([*arguments, *extra, "--output", str(outputs[key])], tree))

    def summary(key: str) -> tuple[float, float, str]:
        wall = statistics.median(m[0] for m in measured[key])
        cpu = statistics.median(m[1] for m in measured[key])
        peaks = [m[2] for m in measured[key] if m[2] is not None]
        return wall, cpu, f"peak RSS {max(peaks):.0f} MB" if peaks else "peak RSS n/a (no GNU time)"

    wall, cpu, rss = summary("ours")
    line = (f"  whole `python -m evaluation`: {wall:.2f} s wall, {cpu:.2f} s CPU of all its processes (medians of "
            f"{runs}), {rss} (the largest process)")
    if name == "hacs":
        line += (f"; the official evaluator (the issue's figure) {OFFICIAL_HACS_SECONDS:.0f} s"
                 f" = {OFFICIAL_HACS_SECONDS / wall:.0f}x this")
    print(line)
    ours_metrics = json.loads(outputs["ours"].read_text())
    for key in list(variants)[1:]:
        other_wall, other_cpu, other_rss = summary(key)
        same, worst = compare_metrics(ours_metrics, json.loads(outputs[key].read_text()))
        label = "`--workers 1`" if key == "one process" else "baseline tree"
        print(f"  {label}: {other_wall:.2f} s wall, {other_cpu:.2f} s CPU, {other_rss} | default / this "
              f"{wall / other_wall:.2f} wall | metrics.json {'identical' if same else 'differ'} "
              f"(max |difference| {worst:.1e})")


def compare_metrics(ours, base) -> tuple[bool, float]:
    """(exactly equal, largest |difference| over the numbers) of two metrics records."""
    if isinstance(ours, dict) and isinstance(base, dict):
        if set(ours) != set(base):
            return False, float("inf")
        results = [compare_metrics(ours[key], base[key]) for key in ours]
        return all(r[0] for r in results), max((r[1] for r in results), default=0.0)
    if isinstance(ours, list) and isinstance(base, list) and len(ours) == len(base):
        results = [compare_metrics(a, b) for a, b in zip(ours, base)]
        return all(r[0] for r in results), max((r[1] for r in results), default=0.0)
    if isinstance(ours, (int, float)) and isinstance(base, (int, float)):
        return ours == base, abs(ours - base)
    return ours == base, 0.0 if ours == base else float("inf")


def stage_report(name: str, ours: Timing, baseline: Timing | None = None, baseline_name: str = "") -> None:
    wall, cpu = ours.median
    line = f"  {name:9s} {wall:6.3f} s (CPU {cpu:6.3f} s)"
    if baseline is not None:
        base_wall, base_cpu = baseline.median
        line += (f" | {baseline_name} {base_wall:6.3f} s (CPU {base_cpu:6.3f} s) | ratio {base_wall / wall:5.1f}x "
                 f"(CPU {base_cpu / cpu:5.1f}x)")
    print(line)


def read_report(path: Path, load, validating_way, runs: int):
    """Time reading a file into columns: the typed way in this process against ``json.load`` plus
    the validating way, then the typed way in its default processes against this process alone.
    ``load(workers)`` reads; returns the columns."""
    ours, base, columns, _ = alternating(lambda: load(1), validating_way, runs)
    stage_report("read", ours, base, "json.load + validating way")
    parts, one, _, _ = alternating(lambda: load(None), lambda: load(1), runs)
    parts_report("read", parts, one, default_parts(path.stat().st_size, submission.BYTES_PER_PART))
    return columns


def score_report(score, runs: int):
    """Time scoring in the default processes against this process alone; ``score(workers)``."""
    parts, one, result, _ = alternating(lambda: score(None), lambda: score(1), runs)
    parts_report("score", parts, one)
    return result


def parts_report(name: str, parts: Timing, one: Timing, num_parts: int | None = None) -> None:
    """The default (forked parts) against one process; CPU time is this process's only."""
    wall, one_wall = parts.median[0], one.median[0]
    count = f"{num_parts} processes" if num_parts else "default processes"
    print(f"  {name:9s} {wall:6.3f} s in {count} | one process {one_wall:6.3f} s | ratio {one_wall / wall:5.2f}x")


def stdlib_json(path: Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------
# The three sets


def first_videos(frame: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, set]:
    videos = sorted(frame["video_id"].unique())
    chosen = set(videos[: max(1, int(fraction * len(videos)))])
    return frame[frame["video_id"].isin(chosen)], chosen


def reference_check(ground_truth: pd.DataFrame, predictions: pd.DataFrame, thresholds) -> tuple[float, bool, float]:
    """(largest |ours - loop reference|, AP bit for bit the official arithmetic, reference seconds)."""
    predictions = predictions[predictions["label"].isin(set(ground_truth["label"]))]
    begin = time.perf_counter()
    labels, expected = average_precision_table(ground_truth, predictions, thresholds)
    seconds = time.perf_counter() - begin
    _, official = average_precision_table(ground_truth, predictions, thresholds, interpolate=official_interpolated_ap)
    ours = average_precision(ground_truth, predictions, thresholds)
    assert list(ours.class_labels) == labels
    return float(np.abs(ours.ap - expected).max()), bool(np.array_equal(ours.ap, official)), seconds


def bench_hacs(paths: dict[str, Path], args, baseline_tree: Path | None) -> None:
    ground_truth = read_hacs_json(paths["ground_truth"])
    annotations = hacs_annotations(ground_truth)
    segments, names = annotations.segments, annotations.classes["label"]
    columns = read_report(paths["submission"], lambda workers: submission.load_hacs_columns(paths["submission"],
                                                                                              workers=workers),
                          lambda: submission.hacs_prediction_columns(stdlib_json(paths["submission"])), args.runs)
    evaluation = score_report(lambda workers: score_detections("hacs", ground_truth, columns, workers=workers),
                              args.runs)
    result, table = evaluation.results["label"], columns.table()
    print(f"  HACS: {segments['video_id'].nunique()} videos, {len(segments)} ground truth, {len(table)} "
          f"predictions, {segments['label'].nunique()} classes: average mAP {100 * result.average_mAP:.2f}")
    whole_process("hacs", ["--dataset", "hacs", "--ground-truth", str(paths["ground_truth"]),
                           "--predictions", str(paths["submission"])], paths["submission"].parent, args.runs,
                  baseline_tree)

    sub_gt, videos = first_videos(segments, args.reference_fraction)
    sub_pred = table[table["video_id"].isin(videos)]
    index_of_name = {name: i for i, name in enumerate(names)}
    sub_pred = sub_pred.assign(label=sub_pred["label_name"].map(index_of_name).to_numpy(np.int64))
    worst, official, seconds = reference_check(sub_gt, sub_pred, HACS_TIOU_THRESHOLDS)
    print(f"  loop reference on {len(videos)} videos ({len(sub_pred)} predictions, {seconds:.1f} s): "
          f"max |ours - reference| {worst:.1e}; AP bit for bit the official arithmetic: {official}")


def bench_proposals(paths: dict[str, Path], args, baseline_tree: Path | None) -> None:
    ground_truth = read_hacs_json(paths["ground_truth"])
    segments = hacs_annotations(ground_truth).segments
    columns = read_report(paths["proposals"], lambda workers: proposals_format.load_proposal_columns(
        paths["proposals"], workers=workers), lambda: proposals_format.proposal_columns(
        stdlib_json(paths["proposals"])), args.runs)
    result = score_report(lambda workers: score_proposals(ground_truth, columns, workers=workers), args.runs)
    table = columns.table()
    print(f"  proposals: {segments['video_id'].nunique()} videos, {len(segments)} ground truth, {len(table)} "
          f"proposals: AR@100 {100 * result.ar_at(100):.2f}, AUC {100 * result.auc:.2f}")
    whole_process("proposals", ["--dataset", "hacs", "--proposals", "--ground-truth", str(paths["ground_truth"]),
                                "--predictions", str(paths["proposals"])], paths["proposals"].parent, args.runs,
                  baseline_tree)

    sub_gt, videos = first_videos(segments, args.reference_fraction)
    sub_props = table[table["video_id"].isin(videos)]
    begin = time.perf_counter()
    expected, expected_an = average_recall_curve(sub_gt, sub_props, PROPOSAL_TIOU_THRESHOLDS)
    seconds = time.perf_counter() - begin
    ours = average_recall(sub_gt, sub_props)
    worst = max(float(np.abs(ours.recall - expected).max()),
                float(np.abs(ours.average_num_proposals - expected_an).max()))
    print(f"  loop reference on {len(videos)} videos ({len(sub_props)} proposals, {seconds:.1f} s): "
          f"max |ours - reference| {worst:.1e}")


def bench_ek100(paths: dict[str, Path], args, baseline_tree: Path | None) -> None:
    # the command line's ground truth (columns): the class lists padded to EK100's 97 verbs and 300 nouns
    annotations = load_ground_truth(build_parser().parse_args(
        ["--dataset", "ek100", "--ground-truth", str(paths["ground_truth"]), "--predictions", "-"]))
    segments = ek100_annotations(annotations).segments  # the table, for the loop reference
    columns = read_report(paths["submission"], lambda workers: submission.load_ek100_columns(
        paths["submission"], EK100_VERBS, EK100_NOUNS, workers=workers), lambda: submission.ek100_prediction_columns(
        stdlib_json(paths["submission"]), EK100_VERBS, EK100_NOUNS), args.runs)
    evaluation = score_report(lambda workers: score_detections("ek100", annotations, columns, workers=workers),
                              args.runs)
    results, table = evaluation.results, columns.table()
    print(f"  EK100: {segments['video_id'].nunique()} videos, {len(segments)} ground truth, {len(table)} "
          "predictions: average mAP " + ", ".join(f"{task} {100 * r.average_mAP:.2f}" for task, r in results.items()))
    whole_process("ek100", ["--dataset", "ek100", "--ground-truth", str(paths["ground_truth"]),
                            "--predictions", str(paths["submission"])], paths["submission"].parent, args.runs,
                  baseline_tree)

    sub_gt, videos = first_videos(segments, max(args.reference_fraction, 1 / EK100_VIDEOS))
    sub_pred = table[table["video_id"].isin(videos)]
    worst, official, seconds = 0.0, True, 0.0
    for task in ("verb", "noun", "action"):
        gt_label = {"verb": sub_gt["verb"], "noun": sub_gt["noun"],
                    "action": sub_gt["verb"] * EK100_NOUNS + sub_gt["noun"]}[task]
        pred_label = {"verb": sub_pred["verb"], "noun": sub_pred["noun"],
                      "action": sub_pred["action_verb"] * EK100_NOUNS + sub_pred["action_noun"]}[task]
        task_worst, task_official, task_seconds = reference_check(
            sub_gt.assign(label=gt_label), sub_pred.assign(label=pred_label), EK100_TIOU_THRESHOLDS)
        worst, official, seconds = max(worst, task_worst), official and task_official, seconds + task_seconds
    print(f"  loop reference on {len(videos)} videos ({len(sub_pred)} predictions, 3 tasks, {seconds:.1f} s): "
          f"max |ours - reference| {worst:.1e}; AP bit for bit the official arithmetic: {official}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (medians)")
    parser.add_argument("--reference-fraction", type=float, default=0.02,
                        help="share of the videos the loop reference runs on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="a checkout of an earlier version whose `python -m evaluation` is timed too")
    parser.add_argument("--keep", type=Path, default=None, help="write the sets here and keep them")
    parser.add_argument("--sets", default="hacs,proposals,ek100", help="comma-separated subset of the sets")
    args = parser.parse_args()
    sets = args.sets.split(",")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(args.seed)
        begin = time.perf_counter()
        hacs_paths = write_hacs_files(folder, *hacs_scale(rng, HACS_VIDEOS, HACS_PREDICTIONS_PER_VIDEO, HACS_CLASSES))
        ek100_paths = write_ek100_files(folder, *ek100_scale(rng, EK100_VIDEOS, EK100_GT_PER_VIDEO,
                                                             EK100_PREDICTIONS_PER_VIDEO))
        sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.0f} MB" for p in [*hacs_paths.values(),
                                                                                  *ek100_paths.values()])
        print(f"sets written in {time.perf_counter() - begin:.0f} s to {folder}: {sizes}")
        if "hacs" in sets:
            bench_hacs(hacs_paths, args, args.baseline_tree)
        if "proposals" in sets:
            bench_proposals(hacs_paths, args, args.baseline_tree)
        if "ek100" in sets:
            bench_ek100(ek100_paths, args, args.baseline_tree)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
