"""Tables (terminal and Markdown, in percent) and the evaluation report: ``report.md`` with the
mAP tables, the best and worst classes, and PNG plots (mAP against tIoU, timelines of ground
truth against the best detections for a few videos, and the AR@AN curve when proposals were scored).

The timelines are meant to be read by anyone: each video over its whole duration, bars coloured
per class with a legend, class names (and scores) on or beside the bars, and correct detections
(those the evaluator matches at the report's lowest tIoU) solid, wrong ones hatched.

Plots use matplotlib's ``Figure`` with the Agg canvas directly, so no display and no global
backend switch is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator

from evaluation.detection import DetectionResult, _match
from evaluation.evaluate import HACS_HEAD, DetectionEvaluation, _table, _task_title, detection_table, proposal_table
from evaluation.proposal import ProposalResult
from runstate import atomic

MAP_PLOT = "map_vs_tiou.png"
TIMELINE_PLOT = "timelines.png"
RECALL_PLOT = "ar_an.png"
TIMELINE_GT_ROWS = 3  # rows of ground-truth bars per video; further overlapping segments share the last
TIMELINE_DET_ROWS = 4  # rows of detection bars per video; a detection that fits none is left out
TIMELINE_MAX_DETECTIONS = 40  # best-scored detections tried per video
TIMELINE_LEGEND_CLASSES = 18  # classes with their own colour (the most frequent); the rest share grey
TIMELINE_OTHER_COLOUR = "#b4b4b4"
TIMELINE_FONT_PT = 7
# Timeline figure geometry, in inches (so that label widths can be estimated before drawing).
_DPI = 100
_FIGURE_WIDTH_IN = 11.0
_LEFT_IN, _RIGHT_IN = 1.0, 0.2
_TOP_IN, _ROW_IN, _PANEL_TITLE_IN, _PANEL_GAP_IN = 0.1, 0.22, 0.3, 0.65
_LEGEND_COLUMNS = 4
_MINUTE_TICK_STEPS_SEC = (15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)


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
    video_durations: Mapping[str, float] | None = None,
) -> Path:
    """Write ``report.md`` and its plots into ``report_dir``; returns the report's path.

    ``video_durations`` (video id -> seconds) sets each timeline's extent; without it a timeline
    ends at the video's last segment or detection.
    """
    report_dir = atomic.make_dirs(report_dir)
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
                          num_timeline_videos, first_threshold, video_durations):
            lines += [f"![Ground truth against the best detections]({TIMELINE_PLOT})", ""]
    if proposals is not None:
        lines += ["## Proposals (%)", "", proposal_table(proposals, markdown=True), ""]
        plot_recall_curve(proposals, report_dir / RECALL_PLOT)
        lines += [f"![Average recall against average number of proposals]({RECALL_PLOT})", ""]
    report = report_dir / "report.md"
    atomic.write_text(report, "\n".join(lines))
    return report


def _save(figure: Figure, path: Path) -> None:
    FigureCanvasAgg(figure)
    with atomic.atomic_output(path) as temporary:
        figure.savefig(temporary, dpi=100, format=path.suffix.lstrip(".") or "png")


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


# --------------------------------------------------------------------------------------
# Timelines: ground truth against the best detections, over each video's whole duration


@dataclass
class TimelineBar:
    """One bar of a timeline: seconds, its class, its row and its label (``""`` when left unlabelled)."""

    start: float
    end: float
    name: str
    row: int
    label: str
    label_side: str  # "inside", "right" or "left" of the bar
    correct: bool | None = None  # detections only: matched by the evaluator at the plot's tIoU
    score: float | None = None


class _Rows:
    """Rows of intervals (seconds) that keep at least ``gap`` apart, filled first-fit."""

    def __init__(self, max_rows: int, gap: float):
        self.max_rows, self.gap = max_rows, gap
        self.rows: list[list[tuple[float, float]]] = []

    def place(self, start: float, end: float) -> int:
        """The first row where ``[start, end]`` fits (opening a new one if allowed), or -1."""
        for index, placed in enumerate(self.rows):
            if all(end + self.gap <= s or e + self.gap <= start for s, e in placed):
                placed.append((start, end))
                return index
        if len(self.rows) < self.max_rows:
            self.rows.append([(start, end)])
            return len(self.rows) - 1
        return -1

    def force(self, start: float, end: float) -> int:
        """Into the last row, overlapping what is there (for ground truth, which is always drawn)."""
        if not self.rows:
            self.rows.append([])
        self.rows[-1].append((start, end))
        return len(self.rows) - 1


def matched_predictions(ground_truth: pd.DataFrame, predictions: pd.DataFrame, tiou_threshold: float) -> np.ndarray:
    """``(P,)`` bool: which predictions the evaluator counts as true positives at ``tiou_threshold``.

    Same video and class name, and greedy by score exactly as :mod:`evaluation.detection` matches
    (equal scores in input order; each ground-truth segment matched at most once). Both tables have
    columns ``video_id, start, end, name`` (predictions also ``score``).
    """
    correct = np.zeros(len(predictions), dtype=bool)
    if len(predictions) == 0 or len(ground_truth) == 0:
        return correct
    class_codes, _ = pd.factorize(np.concatenate([ground_truth["name"].to_numpy(str),
                                                  predictions["name"].to_numpy(str)]))
    video_codes, _ = pd.factorize(np.concatenate([ground_truth["video_id"].to_numpy(str),
                                                  predictions["video_id"].to_numpy(str)]))
    num_gt = len(ground_truth)
    pred_class, pred_video = class_codes[num_gt:], video_codes[num_gt:]
    order = np.lexsort((-predictions["score"].to_numpy(np.float64), pred_class))  # class, then best score
    true_positive = _match(
        class_codes[:num_gt], video_codes[:num_gt], ground_truth[["start", "end"]].to_numpy(np.float64),
        pred_class[order], pred_video[order], predictions[["start", "end"]].to_numpy(np.float64)[order],
        np.array([tiou_threshold], dtype=np.float64),
    )[0]  # (P,) in sorted order
    correct[order] = true_positive
    return correct


def timeline_bars(
    ground_truth: pd.DataFrame,
    predictions: pd.DataFrame,
    correct: np.ndarray,
    duration_sec: float,
    seconds_per_px: float,
    max_detections: int = TIMELINE_MAX_DETECTIONS,
) -> tuple[list[TimelineBar], list[TimelineBar]]:
    """Rows and labels of one video's bars: (ground truth, detections).

    Every ground-truth segment is drawn, first-fit by start in ``TIMELINE_GT_ROWS`` rows (further
    overlapping ones share the last row). Detections are the ``max_detections`` best, first-fit by
    score in ``TIMELINE_DET_ROWS`` rows; one that fits no row is left out. A label ("name" or
    "name score") goes inside its bar where it fits, else to its right or left (inside the video's
    extent), its room kept free in the row; where there is no such room the bar goes unlabelled
    (its colour still names the class).

    ``seconds_per_px`` converts the labels' estimated widths (``TIMELINE_FONT_PT`` text) to seconds.
    """
    char_sec = 0.6 * TIMELINE_FONT_PT * _DPI / 72 * seconds_per_px  # DejaVu Sans averages 0.55-0.6 em
    pad_sec = 3 * seconds_per_px

    def place(rows: _Rows, start: float, end: float, label: str, force: bool) -> tuple[int, str, str]:
        """(row, label, label side) of one bar, trying the label inside, right, left, then no label."""
        text_sec = len(label) * char_sec + 2 * pad_sec
        if text_sec <= end - start:
            extents = [("inside", start, end)]
        else:
            extents = [(side, s, e) for side, s, e in (("right", start, end + text_sec),
                                                         ("left", start - text_sec, end))
                       if s >= 0 and e <= duration_sec]
        for side, extent_start, extent_end in extents:
            row = rows.place(extent_start, extent_end)
            if row >= 0:
                return row, label, side
        row = rows.place(start, end)
        if row < 0 and force:
            row = rows.force(start, end)
        return row, "", ""

    gt_rows = _Rows(TIMELINE_GT_ROWS, 2 * seconds_per_px)
    gt_bars = []
    for start, end, name in ground_truth.sort_values("start", kind="stable")[["start", "end", "name"]].itertuples(
            index=False):
        row, label, side = place(gt_rows, float(start), float(end), str(name), force=True)
        gt_bars.append(TimelineBar(float(start), float(end), str(name), row, label, side))

    det_rows = _Rows(TIMELINE_DET_ROWS, 2 * seconds_per_px)
    det_bars = []
    best = np.argsort(-predictions["score"].to_numpy(np.float64), kind="stable")[:max_detections]
    for index in best:
        start, end = float(predictions["start"].iloc[index]), float(predictions["end"].iloc[index])
        name, score = str(predictions["name"].iloc[index]), float(predictions["score"].iloc[index])
        row, label, side = place(det_rows, start, end, f"{name} {score:.2g}", force=False)
        if row >= 0:
            det_bars.append(TimelineBar(start, end, name, row, label, side, bool(correct[index]), score))
    return gt_bars, det_bars


def timeline_colours(names: list[str]) -> dict[str, str]:
    """Colours of the ``TIMELINE_LEGEND_CLASSES`` most frequent of ``names`` (ties by name); the
    others map to ``TIMELINE_OTHER_COLOUR``."""
    counts = pd.Series(names, dtype=object).value_counts()
    ranked = sorted(counts.index, key=lambda name: (-counts[name], name))
    tab20 = [to_hex(colour) for colour in colormaps["tab20"].colors]
    # the strong colours first, then their light partners; not tab20's greys, kept for other classes
    palette = [colour for i, colour in enumerate(tab20[0::2] + tab20[1::2]) if i % 10 != 7]
    return {name: (palette[i] if i < TIMELINE_LEGEND_CLASSES else TIMELINE_OTHER_COLOUR)
            for i, name in enumerate(ranked)}


def plot_timelines(
    ground_truth: pd.DataFrame,
    predictions: pd.DataFrame,
    path: Path,
    num_videos: int,
    min_tiou: float,
    video_durations: Mapping[str, float] | None = None,
) -> bool:
    """Ground truth against the best detections for the first ``num_videos`` videos (by id) that
    have ground truth, each over its whole duration (``video_durations``; where unknown, up to its
    last segment or detection).

    Bars are coloured per class (legend below the plot), labelled with the class (and score) inside
    or beside them where there is room (see :func:`timeline_bars`). A detection the evaluator counts
    as correct at ``min_tiou`` (:func:`matched_predictions`) is solid; a wrong one is hatched.

    Returns False (and draws nothing) when there is no ground truth.
    """
    figure = timeline_figure(ground_truth, predictions, num_videos, min_tiou, video_durations)
    if figure is None:
        return False
    _save(figure, path)
    return True


def timeline_figure(
    ground_truth: pd.DataFrame,
    predictions: pd.DataFrame,
    num_videos: int,
    min_tiou: float,
    video_durations: Mapping[str, float] | None = None,
) -> Figure | None:
    """The figure :func:`plot_timelines` saves (``None`` without ground truth)."""
    videos = sorted(ground_truth["video_id"].unique())[:num_videos]
    if not videos:
        return None
    durations = dict(video_durations or {})
    axes_width_px = (_FIGURE_WIDTH_IN - _LEFT_IN - _RIGHT_IN) * _DPI

    panels = []  # (video_id, duration, gt bars, detection bars, number of detections)
    for video_id in videos:
        gt = ground_truth[ground_truth["video_id"] == video_id]
        pred = predictions[predictions["video_id"] == video_id]
        duration = durations.get(video_id)
        if duration is None or not np.isfinite(duration) or duration <= 0:
            duration = float(max(gt["end"].max(), pred["end"].max() if len(pred) else 0.0))
        duration = max(float(duration), 1e-3)
        correct = matched_predictions(gt, pred, min_tiou)
        gt_bars, det_bars = timeline_bars(gt, pred, correct, duration, duration / axes_width_px)
        panels.append((video_id, duration, gt_bars, det_bars, len(pred)))

    colours = timeline_colours([bar.name for _, _, gt_bars, det_bars, _ in panels for bar in gt_bars + det_bars])
    legend_handles = _timeline_legend(colours, min_tiou)
    legend_rows = -(-len(legend_handles) // _LEGEND_COLUMNS)

    rows_per_panel = [(1 + max([b.row for b in gt] + [0]), 1 + max([b.row for b in det] + [0]))
                      for _, _, gt, det, _ in panels]
    panel_heights = [(gt_rows + det_rows + 0.5) * _ROW_IN for gt_rows, det_rows in rows_per_panel]
    legend_in = 0.35 + legend_rows * 0.2
    height_in = _TOP_IN + sum(panel_heights) + len(panels) * _PANEL_GAP_IN + legend_in
    figure = Figure(figsize=(_FIGURE_WIDTH_IN, height_in), dpi=_DPI)

    top_in = _TOP_IN
    for (video_id, duration, gt_bars, det_bars, num_predictions), (gt_rows, det_rows), panel_in in zip(
            panels, rows_per_panel, panel_heights):
        top_in += _PANEL_TITLE_IN
        axes = figure.add_axes((_LEFT_IN / _FIGURE_WIDTH_IN, 1 - (top_in + panel_in) / height_in,
                                1 - (_LEFT_IN + _RIGHT_IN) / _FIGURE_WIDTH_IN, panel_in / height_in))
        top_in += panel_in + _PANEL_GAP_IN - _PANEL_TITLE_IN
        det_offset = gt_rows + 0.5  # y of the first detection row; rows go down the page
        for bar in gt_bars:
            _draw_bar(axes, bar, bar.row, colours[bar.name], solid=True)
        for bar in det_bars:
            _draw_bar(axes, bar, det_offset + bar.row, colours[bar.name], solid=bar.correct)
        axes.axhline(gt_rows - 0.25, color="0.75", linewidth=0.8)
        axes.set_xlim(0, duration)
        axes.set_ylim(det_offset + det_rows - 0.5, -0.5)
        axes.set_yticks([(gt_rows - 1) / 2, det_offset + (det_rows - 1) / 2], labels=["ground truth", "detections"])
        axes.tick_params(axis="y", length=0)
        if duration > 120:  # minutes: ticks at round numbers of seconds (15 s, 1 min, 5 min, ...)
            step = next((step for step in _MINUTE_TICK_STEPS_SEC if duration / step <= 12), duration / 12)
            axes.xaxis.set_major_locator(MultipleLocator(step))
            axes.xaxis.set_major_formatter(FuncFormatter(_minutes_seconds))
        else:
            axes.xaxis.set_major_formatter(FuncFormatter(_seconds))
        axes.tick_params(axis="x", labelsize=8)
        num_correct = sum(bool(bar.correct) for bar in det_bars)
        axes.set_title(f"{video_id}: {len(gt_bars)} ground-truth segments; the best {len(det_bars)} of "
                       f"{num_predictions} detections, {num_correct} correct", fontsize=9, loc="left")
    axes.set_xlabel("time (min:s)" if duration > 120 else "time (s)", fontsize=8)
    figure.legend(handles=legend_handles, loc="lower center", ncol=_LEGEND_COLUMNS, fontsize=TIMELINE_FONT_PT + 1,
                  frameon=False, bbox_to_anchor=(0.5, 0.0))
    return figure


def _draw_bar(axes, bar: TimelineBar, y: float, colour: str, solid: bool) -> None:
    """A bar at row ``y``: solid with a dark edge, or hatched in its colour; its label inside or beside."""
    if solid:
        axes.barh(y, bar.end - bar.start, left=bar.start, height=0.78, color=colour, edgecolor="black",
                  linewidth=0.6)
    else:
        axes.barh(y, bar.end - bar.start, left=bar.start, height=0.78, color=to_rgba(colour, 0.15),
                  edgecolor=colour, hatch="////", linewidth=1.2)
    if not bar.label:
        return
    if bar.label_side == "inside":
        text_colour = _text_colour(colour) if solid else "black"
        axes.text(bar.start, y, " " + bar.label, fontsize=TIMELINE_FONT_PT, va="center", ha="left",
                  color=text_colour, clip_on=True)
    elif bar.label_side == "right":
        axes.text(bar.end, y, " " + bar.label, fontsize=TIMELINE_FONT_PT, va="center", ha="left", clip_on=True)
    else:
        axes.text(bar.start, y, bar.label + " ", fontsize=TIMELINE_FONT_PT, va="center", ha="right", clip_on=True)


def _timeline_legend(colours: dict[str, str], min_tiou: float) -> list[Patch]:
    named = [Patch(facecolor=colour, edgecolor="black", linewidth=0.6, label=name)
             for name, colour in colours.items() if colour != TIMELINE_OTHER_COLOUR]
    num_others = sum(colour == TIMELINE_OTHER_COLOUR for colour in colours.values())
    if num_others:
        named.append(Patch(facecolor=TIMELINE_OTHER_COLOUR, edgecolor="black", linewidth=0.6,
                           label=f"{num_others} other classes"))
    return named + [
        Patch(facecolor="0.6", edgecolor="black", linewidth=0.6,
              label=f"solid: correct detection (matched at tIoU \u2265 {min_tiou:.2f})"),
        Patch(facecolor=to_rgba("0.4", 0.15), edgecolor="0.4", hatch="////", linewidth=1.2,
              label="hatched: wrong detection"),
    ]


def _text_colour(colour: str) -> str:
    red, green, blue = to_rgba(colour)[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.55 else "white"


def _seconds(value: float, _position) -> str:
    return f"{value:g}"


def _minutes_seconds(value: float, _position) -> str:
    minutes, seconds = divmod(int(round(value)), 60)
    return f"{minutes}:{seconds:02d}"
