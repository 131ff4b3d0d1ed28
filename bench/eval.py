"""Benchmark: vectorized average mAP and proposal AR@AN against the loop-by-loop reference
(evaluation/reference.py), on random sets of leaderboard scale, measured in this one process.

    python bench/eval.py [--reference-fraction 0.05] [--seed 0]

* HACS scale: 6,000 videos, 100 predictions each (600,000), 200 classes, 10 thresholds.
* EK100 scale: 138 videos, 70 ground-truth actions each (9,660), 97 verbs / 300 nouns,
  2,000 predictions per video (276,000), 5 thresholds, three tasks.
* Proposals: the HACS-scale set, 100 proposals per video.

The reference takes minutes at full scale, so it runs on the first ``--reference-fraction`` of the
videos and its time is extrapolated linearly in the number of videos (both codes scale so: every
video adds the same amount of work); the script says so in its output. On that subset it also
checks that both agree (max |difference| printed). Never used as a test threshold.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.detection import (  # noqa: E402
    EK100_TIOU_THRESHOLDS,
    HACS_TIOU_THRESHOLDS,
    average_precision,
    evaluate_ek100,
)
from evaluation.proposal import average_recall  # noqa: E402
from evaluation.reference import average_precision_table, average_recall_curve  # noqa: E402


def jittered(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, scale: float):
    """Segments near the given ones: boundaries moved by up to ``scale`` x the length."""
    length = end - start
    new_start = start + rng.uniform(-scale, scale, len(start)) * length
    new_end = end + rng.uniform(-scale, scale, len(start)) * length
    return np.minimum(new_start, new_end - 0.1), np.maximum(new_end, new_start + 0.1)


def hacs_scale(rng: np.random.Generator, num_videos=6000, preds_per_video=100, num_classes=200):
    """One class per video, 1-4 instances; 60% of predictions near ground truth with the video's class."""
    duration = rng.uniform(30, 240, num_videos)
    video_class = rng.integers(0, num_classes, num_videos)
    per_video = rng.integers(1, 5, num_videos)
    gt_video = np.repeat(np.arange(num_videos), per_video)
    length = rng.uniform(0.05, 0.4, len(gt_video)) * duration[gt_video]
    gt_start = rng.uniform(0, 1, len(gt_video)) * (duration[gt_video] - length)
    ground_truth = pd.DataFrame({"video_id": [f"v{i:05d}" for i in gt_video], "start": gt_start,
                                 "end": gt_start + length, "label": video_class[gt_video]})

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
    predictions = pd.DataFrame({"video_id": [f"v{i:05d}" for i in pred_video], "start": start, "end": end,
                                "label": label, "score": rng.random(len(pred_video))})
    return ground_truth, predictions


def ek100_scale(rng: np.random.Generator, num_videos=138, gt_per_video=70, preds_per_video=2000):
    """Many short, overlapping actions per video; verb and noun ids skewed as in EK100."""
    duration = rng.uniform(300, 1500, num_videos)
    gt_video = np.repeat(np.arange(num_videos), gt_per_video)
    length = rng.exponential(3.5, len(gt_video)) + 0.5
    gt_start = rng.uniform(0, 1, len(gt_video)) * (duration[gt_video] - length)
    verb = np.minimum(rng.zipf(1.6, len(gt_video)) - 1, 96)
    noun = np.minimum(rng.zipf(1.3, len(gt_video)) - 1, 299)
    ground_truth = pd.DataFrame({"video_id": [f"P{i:03d}" for i in gt_video], "start": gt_start,
                                 "end": gt_start + length, "verb": verb, "noun": noun})
    pred_video = np.repeat(np.arange(num_videos), preds_per_video)
    source = pred_video * gt_per_video + rng.integers(0, gt_per_video, len(pred_video))
    start, end = jittered(rng, gt_start[source], gt_start[source] + length[source], 0.4)
    right_verb = rng.random(len(pred_video)) < 0.5
    right_noun = rng.random(len(pred_video)) < 0.4
    pred_verb = np.where(right_verb, verb[source], np.minimum(rng.zipf(1.6, len(pred_video)) - 1, 96))
    pred_noun = np.where(right_noun, noun[source], np.minimum(rng.zipf(1.3, len(pred_video)) - 1, 299))
    predictions = pd.DataFrame({"video_id": [f"P{i:03d}" for i in pred_video], "start": start, "end": end,
                                "score": rng.random(len(pred_video)), "verb": pred_verb, "noun": pred_noun,
                                "action_verb": pred_verb, "action_noun": pred_noun})
    return ground_truth, predictions


def first_videos(frame: pd.DataFrame, videos: set) -> pd.DataFrame:
    return frame[frame["video_id"].isin(videos)]


def timed(function, *args, **kwargs):
    begin = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - begin


def report(name: str, ours: float, reference: float, fraction: float, max_difference: float) -> None:
    estimate = reference / fraction
    note = f"measured on {fraction:.0%} of the videos, x{1 / fraction:.0f} extrapolated" if fraction < 1 else ""
    print(f"{name}: ours {ours:.2f} s | loop reference {estimate:.1f} s {note} | ratio {estimate / ours:.0f}x "
          f"| max |ours - reference| on the subset {max_difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-fraction", type=float, default=0.05,
                        help="share of the videos the loop reference runs on (its time is extrapolated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    fraction = args.reference_fraction

    ground_truth, predictions = hacs_scale(rng)
    print(f"HACS scale: {ground_truth['video_id'].nunique()} videos, {len(ground_truth)} ground truth, "
          f"{len(predictions)} predictions, {ground_truth['label'].nunique()} classes")
    result, ours = timed(average_precision, ground_truth, predictions, HACS_TIOU_THRESHOLDS)
    print(f"  average mAP {100 * result.average_mAP:.2f}")
    videos = set(sorted(ground_truth["video_id"].unique())[: int(fraction * 6000)])
    sub_gt, sub_pred = first_videos(ground_truth, videos), first_videos(predictions, videos)
    sub_pred = sub_pred[sub_pred["label"].isin(set(sub_gt["label"]))]  # classes with ground truth there
    (labels, expected), reference = timed(average_precision_table, sub_gt, sub_pred, HACS_TIOU_THRESHOLDS)
    check = average_precision(sub_gt, sub_pred, HACS_TIOU_THRESHOLDS)
    ours_sub = timed(average_precision, sub_gt, sub_pred, HACS_TIOU_THRESHOLDS)[1]
    report("  detection", ours, reference, fraction, float(np.abs(check.ap - expected).max()))
    print(f"  (on the same subset: ours {ours_sub:.3f} s, reference {reference:.1f} s, "
          f"ratio {reference / ours_sub:.0f}x)")

    proposals = predictions.drop(columns="label")
    recall, ours = timed(average_recall, ground_truth, proposals)
    print(f"  proposals: AR@100 {100 * recall.ar_at(100):.2f}, AUC {100 * recall.auc:.2f}")
    sub_props = first_videos(proposals, videos)
    (expected_recall, _), reference = timed(average_recall_curve, sub_gt, sub_props, HACS_TIOU_THRESHOLDS)
    check_recall = average_recall(sub_gt, sub_props)
    report("  proposals", ours, reference, fraction, float(np.abs(check_recall.recall - expected_recall).max()))

    ground_truth, predictions = ek100_scale(rng)
    print(f"EK100 scale: {ground_truth['video_id'].nunique()} videos, {len(ground_truth)} ground truth, "
          f"{len(predictions)} predictions")
    results, ours = timed(evaluate_ek100, ground_truth, predictions, 300)
    print("  average mAP " + ", ".join(f"{task} {100 * r.average_mAP:.2f}" for task, r in results.items()))
    videos = set(sorted(ground_truth["video_id"].unique())[: max(1, int(fraction * 138))])
    ek_fraction = len(videos) / 138
    sub_gt, sub_pred = first_videos(ground_truth, videos), first_videos(predictions, videos)
    check = evaluate_ek100(sub_gt, sub_pred, 300)
    begin = time.perf_counter()
    worst = 0.0
    for task in ("verb", "noun", "action"):
        gt_label = {"verb": sub_gt["verb"], "noun": sub_gt["noun"],
                    "action": sub_gt["verb"] * 300 + sub_gt["noun"]}[task]
        pred_label = {"verb": sub_pred["verb"], "noun": sub_pred["noun"],
                      "action": sub_pred["action_verb"] * 300 + sub_pred["action_noun"]}[task]
        keep = pred_label.isin(set(gt_label)).to_numpy()
        _, expected = average_precision_table(sub_gt.assign(label=gt_label),
                                              sub_pred[keep].assign(label=pred_label[keep]), EK100_TIOU_THRESHOLDS)
        worst = max(worst, float(np.abs(check[task].ap - expected).max()))
    reference = time.perf_counter() - begin
    report("  detection (3 tasks)", ours, reference, ek_fraction, worst)


if __name__ == "__main__":
    main()
