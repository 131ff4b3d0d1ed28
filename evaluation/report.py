"""Tables (terminal and Markdown, in percent) and the evaluation report: ``report.md`` with the
mAP tables, the best and worst classes, and PNG plots (mAP against tIoU, a timeline of ground
truth against the top detections for a few videos, and the AR@AN curve when proposals were scored).

Plots use matplotlib's ``Figure`` with the Agg canvas directly, so no display and no global
backend switch is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluation.detection import DetectionResult
from evaluation.evaluate import HACS_HEAD, DetectionEvaluation
from evaluation.proposal import ProposalResult
from evaluation.tiou import pairwise_tiou

MAP_PLOT = "map_vs_tiou.png"
TIMELINE_PLOT = "timelines.png"
RECALL_PLOT = "ar_an.png"
TIMELINE_WINDOW_SEC = 120.0  # longest stretch of one video drawn on a timeline
TIMELINE_SEGMENTS = 10  # ground-truth segments a timeline window aims to show


def _task_title(task: str) -> str:
    return "mAP" if task == HACS_HEAD else task


def detection_table(results: dict[str, DetectionResult], markdown: bool = False) -> str:
    """mAP (%) per threshold and the average, one row per task."""
    thresholds = next(iter(results.values())).tiou_thresholds
    header = ["task"] + [f"{t:.2f}" for t in thresholds] + ["avg"]
    rows = [[_task_title(task)] + [f"{100 * m:.2f}" for m in result.mAP] + [f"{100 * result.average_mAP:.2f}"]
            for task, result in results.items()]
    return _table(header, rows, markdown)


def proposal_table(result: ProposalResult, markdown: bool = False) -> str:
    """AR@n and AUC (%) in one row."""
    metrics = result.to_metrics()
    return _table(list(metrics), [[f"{100 * value:.2f}" for value in metrics.values()]], markdown)


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header] + rows
    )


def class_extremes(result: DetectionResult, count: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``count`` best and worst classes by AP averaged over thresholds (ties: by name)."""
    table = pd.DataFrame({
        "class": result.class_names,
        "AP": result.per_class_average_ap,
        "ground truth": result.num_ground_truth,
        "predictions": result.num_predictions,
    })
    best = table.sort_values(["AP", "class"], ascending=[False, True], kind="stable").head(count)
    worst = table.sort_values(["AP", "class"], ascending=[True, True], kind="stable").head(count)
    return best, worst


def _class_rows_markdown(table: pd.DataFrame) -> str:
    rows = [[str(r["class"]), f"{100 * r['AP']:.2f}", str(r["ground truth"]), str(r["predictions"])]
            for _, r in table.iterrows()]
    return _table(["class", "avg AP (%)", "ground truth", "predictions"], rows, markdown=True)


def write_report(
    report_dir: str | Path,
    detection: DetectionEvaluation | None = None,
    proposals: ProposalResult | None = None,
    title: str = "Evaluation",
    num_classes_listed: int = 5,
    num_timeline_videos: int = 4,
) -> Path:
    """Write ``report.md`` and its plots into ``report_dir``; returns the report's path."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", ""]
    if detection is not None:
        lines += ["## Detection mAP (%)", "", detection_table(detection.results, markdown=True), ""]
        for task, result in detection.results.items():
            best, worst = class_extremes(result, num_classes_listed)
            heading = "" if task == HACS_HEAD else f" ({task})"
            lines += [f"### Best classes{heading}", "", _class_rows_markdown(best), ""]
            lines += [f"### Worst classes{heading}", "", _class_rows_markdown(worst), ""]
        plot_map_vs_tiou(detection.results, report_dir / MAP_PLOT)
        lines += ["## Plots", "", f"![mAP against tIoU]({MAP_PLOT})", ""]
        first_threshold = float(np.min(next(iter(detection.results.values())).tiou_thresholds))
        if plot_timelines(detection.ground_truth, detection.predictions, report_dir / TIMELINE_PLOT,
                          num_timeline_videos, first_threshold):
            lines += [f"![Ground truth against the top detections]({TIMELINE_PLOT})", ""]
    if proposals is not None:
        lines += ["## Proposals (%)", "", proposal_table(proposals, markdown=True), ""]
        plot_recall_curve(proposals, report_dir / RECALL_PLOT)
        lines += [f"![Average recall against average number of proposals]({RECALL_PLOT})", ""]
    report = report_dir / "report.md"
    report.write_text("\n".join(lines))
    return report


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100)


def plot_map_vs_tiou(results: dict[str, DetectionResult], path: Path) -> None:
    """One line of mAP (%) against the tIoU threshold per task."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    for task, result in results.items():
        axes.plot(result.tiou_thresholds, 100 * result.mAP, marker="o",
                  label=f"{_task_title(task)} (avg {100 * result.average_mAP:.2f})")
    axes.set_xlabel("tIoU threshold")
    axes.set_ylabel("mAP (%)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save(figure, path)


def plot_recall_curve(result: ProposalResult, path: Path) -> None:
    """Average recall (%) against the average number of proposals per video."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    axes.plot(result.average_num_proposals, 100 * result.average_recall,
              label=f"AR, AUC {100 * result.auc:.2f}")
    axes.set_xlabel("average number of proposals per video")
    axes.set_ylabel("average recall (%)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    _save(figure, path)


def plot_timelines(
    ground_truth: pd.DataFrame, predictions: pd.DataFrame, path: Path, num_videos: int, min_tiou: float
) -> bool:
    """For the first ``num_videos`` videos (by id) that have ground truth: ground truth (top row)
    and the best-scored detections (bottom row) from the first ground-truth start to the end of the
    first ``TIMELINE_SEGMENTS`` segments (at most ``TIMELINE_WINDOW_SEC`` seconds). A detection is
    green when a ground-truth segment of the same class overlaps it by at least ``min_tiou``, else
    red; its opacity follows its score rank.

    Returns False (and draws nothing) when there is no ground truth.
    """
    videos = sorted(ground_truth["video_id"].unique())[:num_videos]
    if not videos:
        return False
    figure = Figure(figsize=(10, 1.8 * len(videos) + 0.6))
    for row, video_id in enumerate(videos):
        axes = figure.add_subplot(len(videos), 1, row + 1)
        gt = ground_truth[ground_truth["video_id"] == video_id].sort_values("start", kind="stable")
        window_start = float(gt["start"].iloc[0])
        # up to the end of the first TIMELINE_SEGMENTS segments, so that names stay readable
        window_end = min(float(gt["end"].iloc[:TIMELINE_SEGMENTS].max()), window_start + TIMELINE_WINDOW_SEC)
        window_end = max(window_end, window_start + 1.0)  # zero-length ground truth still gets an axis
        gt = gt[gt["start"] < window_end]
        pred = predictions[(predictions["video_id"] == video_id) & (predictions["end"] > window_start)
                           & (predictions["start"] < window_end)]
        pred = pred.sort_values("score", ascending=False, kind="stable").head(max(5, min(30, 2 * len(gt))))
        overlap = pairwise_tiou(pred[["start", "end"]].to_numpy(), gt[["start", "end"]].to_numpy())
        # (P, G): same class and enough overlap
        same_class = pred["name"].to_numpy()[:, None] == gt["name"].to_numpy()[None, :]
        correct = ((overlap >= min_tiou) & same_class).any(axis=1)
        for start, end, name in zip(gt["start"], gt["end"], gt["name"]):
            axes.barh(1, end - start, left=start, height=0.6, color="0.55", edgecolor="black", linewidth=0.5)
            if len(gt) <= 12:
                axes.text(start, 1.38, str(name), fontsize=7, va="bottom")
        pred_rows = zip(pred["start"], pred["end"], pred["name"], correct)
        for rank, (start, end, name, hit) in enumerate(pred_rows):
            alpha = 0.9 - 0.6 * rank / max(1, len(pred) - 1)
            axes.barh(0, end - start, left=start, height=0.6, color="tab:green" if hit else "tab:red",
                      alpha=alpha, edgecolor="black", linewidth=0.5)
            if len(pred) <= 8:
                axes.text(start, -0.42, str(name), fontsize=7, va="top")
        axes.set_yticks([0, 1], labels=["detections", "ground truth"])
        axes.set_ylim(-0.9, 1.9)
        axes.set_xlim(window_start, window_end)
        axes.set_title(str(video_id), fontsize=9, loc="left")
    axes.set_xlabel("time (s)")
    figure.tight_layout()
    _save(figure, path)
    return True
