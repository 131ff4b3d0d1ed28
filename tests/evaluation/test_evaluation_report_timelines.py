"""The report's timelines (evaluation/report.py): which detections count as correct, how bars are
put in rows and labelled, and what the figure shows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluation.reference import tiou
from evaluation.report import (
    TIMELINE_DET_ROWS,
    TIMELINE_GT_ROWS,
    TIMELINE_OTHER_COLOUR,
    matched_predictions,
    plot_timelines,
    timeline_bars,
    timeline_colours,
    timeline_figure,
    write_report,
)


def plain_matches(ground_truth: pd.DataFrame, predictions: pd.DataFrame, threshold: float) -> list[bool]:
    """The protocol as worded (evaluation/detection.py), one prediction at a time: per class and
    video, best score first (ties in input order), the free same-class segment of highest tIoU
    (ties: the later segment) at or above the threshold."""
    gt = list(ground_truth[["video_id", "start", "end", "name"]].itertuples(index=False))
    preds = list(predictions[["video_id", "start", "end", "name", "score"]].itertuples(index=False))
    locked = [False] * len(gt)
    outcome = [False] * len(preds)
    for index in sorted(range(len(preds)), key=lambda i: -preds[i].score):  # sorted() is stable
        p = preds[index]
        candidates = [j for j, g in enumerate(gt) if g.video_id == p.video_id and g.name == p.name]
        overlaps = {j: tiou((p.start, p.end), (gt[j].start, gt[j].end)) for j in candidates}
        for j in sorted(candidates, key=lambda j: (overlaps[j], j), reverse=True):
            if overlaps[j] < threshold:
                break
            if not locked[j]:
                locked[j] = outcome[index] = True
                break
    return outcome


def random_tables(seed: int, num_gt: int = 30, num_pred: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = ["open fridge", "take cup", "wash plate", "cut onion"]
    videos = ["v1", "v2", "v3"]
    gt_start = rng.uniform(0, 50, num_gt)
    ground_truth = pd.DataFrame({"video_id": rng.choice(videos, num_gt), "start": gt_start,
                                 "end": gt_start + rng.uniform(0.5, 8, num_gt), "name": rng.choice(names, num_gt)})
    # predictions near ground truth, scores on a coarse grid so that ties happen
    anchor = rng.integers(0, num_gt, num_pred)
    start = ground_truth["start"].to_numpy()[anchor] + rng.normal(0, 1.0, num_pred)
    predictions = pd.DataFrame({
        "video_id": np.where(rng.random(num_pred) < 0.9, ground_truth["video_id"].to_numpy()[anchor],
                             rng.choice(videos, num_pred)),
        "start": start, "end": start + rng.uniform(0.3, 9, num_pred),
        "score": np.round(rng.uniform(0, 1, num_pred), 1),
        "name": np.where(rng.random(num_pred) < 0.6, ground_truth["name"].to_numpy()[anchor],
                         rng.choice(names, num_pred)),
    })
    return ground_truth, predictions


def test_matched_predictions_hand_worked():
    ground_truth = pd.DataFrame({"video_id": ["a"], "start": [0.0], "end": [10.0], "name": ["open fridge"]})
    predictions = pd.DataFrame({
        "video_id": ["a", "a", "a", "a", "b"],
        "start": [0.0, 0.0, 0.0, 5.0, 0.0], "end": [10.0, 10.0, 10.0, 10.0, 10.0],
        "score": [0.8, 0.9, 0.95, 0.99, 0.99],
        "name": ["open fridge", "open fridge", "take cup", "open fridge", "open fridge"],
    })
    # by score: the 0.99 in video a has tIoU 0.5 and takes the segment at threshold 0.5 (not at
    # 0.6); the 0.9 then finds it taken, or takes it at 0.6; the 0.8 never; wrong class and video never
    assert matched_predictions(ground_truth, predictions, 0.5).tolist() == [False, False, False, True, False]
    assert matched_predictions(ground_truth, predictions, 0.6).tolist() == [False, True, False, False, False]
    assert not matched_predictions(ground_truth.iloc[:0], predictions, 0.5).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.1, 0.5])
def test_matched_predictions_against_the_plain_loop(seed, threshold):
    ground_truth, predictions = random_tables(seed)
    expected = plain_matches(ground_truth, predictions, threshold)
    assert matched_predictions(ground_truth, predictions, threshold).tolist() == expected
    assert 10 < sum(expected) < len(expected)  # the case has both kinds


def test_rows_keep_bars_and_their_labels_apart():
    ground_truth, predictions = random_tables(4, num_gt=40, num_pred=300)
    gt, pred = ground_truth[ground_truth["video_id"] == "v1"], predictions[predictions["video_id"] == "v1"]
    correct = matched_predictions(gt, pred, 0.3)
    duration, seconds_per_px = 60.0, 60.0 / 980
    gt_bars, det_bars = timeline_bars(gt, pred, correct, duration, seconds_per_px, max_detections=40)

    assert sorted((b.start, b.end) for b in gt_bars) == sorted(zip(gt["start"], gt["end"]))  # all drawn
    assert max(b.row for b in gt_bars) < TIMELINE_GT_ROWS and max(b.row for b in det_bars) < TIMELINE_DET_ROWS
    best = pred.sort_values("score", ascending=False, kind="stable").head(40)
    assert [b.score for b in det_bars] == sorted((b.score for b in det_bars), reverse=True)
    assert {(b.start, b.end, b.name) for b in det_bars} <= set(zip(best["start"], best["end"], best["name"]))
    for bar in det_bars:  # the flag is the evaluator's
        position = np.flatnonzero((pred["start"].to_numpy() == bar.start) & (pred["end"].to_numpy() == bar.end))[0]
        assert bar.correct == correct[position]

    char_sec = 0.6 * 7 * 100 / 72 * seconds_per_px

    def extent(bar):  # the bar and its label's room, as timeline_bars reserves it
        text_sec = len(bar.label) * char_sec + 6 * seconds_per_px
        if bar.label_side == "right":
            return bar.start, bar.end + text_sec
        if bar.label_side == "left":
            return bar.start - text_sec, bar.end
        return bar.start, bar.end

    for bars, shared_last_row in ((det_bars, False), (gt_bars, True)):
        rows = {}
        for bar in bars:
            rows.setdefault(bar.row, []).append(extent(bar))
            if bar.label_side == "inside":
                assert len(bar.label) * char_sec + 6 * seconds_per_px <= bar.end - bar.start
            if bar.label_side in ("left", "right"):
                assert 0 <= extent(bar)[0] and extent(bar)[1] <= duration
        for row, extents in rows.items():
            if shared_last_row and row == max(rows):
                continue  # ground truth that fits nowhere is drawn in the last row anyway
            extents.sort()
            assert all(a[1] <= b[0] for a, b in zip(extents, extents[1:])), (row, extents)
    labelled = [b for b in det_bars if b.label]
    assert len(labelled) > len(det_bars) // 2
    assert all(b.label == f"{b.name} {b.score:.2g}" for b in labelled)


def test_a_label_goes_inside_right_or_left():
    ground_truth = pd.DataFrame({"video_id": ["v"] * 3, "start": [0.0, 40.0, 97.0], "end": [30.0, 41.0, 99.5],
                                 "name": ["wash plate", "take cup", "open fridge"]})
    empty = pd.DataFrame({"video_id": [], "start": [], "end": [], "score": [], "name": []})
    gt_bars, _ = timeline_bars(ground_truth, empty, np.zeros(0, bool), 100.0, 100.0 / 980)
    assert [(b.label, b.label_side) for b in gt_bars] == [
        ("wash plate", "inside"), ("take cup", "right"), ("open fridge", "left")]


def test_figure_shows_whole_videos_names_legend_and_correct_versus_wrong(tmp_path):
    ground_truth, predictions = random_tables(5)
    durations = {"v1": 75.0, "v2": 62.5, "v3": 200.0}
    figure = timeline_figure(ground_truth, predictions, 3, 0.1, durations)
    correct = matched_predictions(ground_truth, predictions, 0.1)
    legend_texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert "solid: correct detection (matched at tIoU \u2265 0.10)" in legend_texts
    assert "hatched: wrong detection" in legend_texts
    assert set(ground_truth["name"]) <= set(legend_texts)
    for axes, video_id in zip(figure.axes, ["v1", "v2", "v3"]):
        assert axes.get_xlim() == (0.0, durations[video_id])
        gt = ground_truth[ground_truth["video_id"] == video_id]
        pred = predictions[predictions["video_id"] == video_id]
        texts = {t.get_text().strip() for t in axes.texts}
        assert texts & set(gt["name"])  # ground-truth names on the bars
        assert any(text.rsplit(" ", 1)[0] in set(pred["name"]) for text in texts)  # "name score" on detections
        hatched = sum(bool(p.get_hatch()) for p in axes.patches)
        solid = len(axes.patches) - hatched
        shown = int(axes.get_title(loc="left").split("the best ")[1].split(" ")[0])
        num_correct = int(axes.get_title(loc="left").rsplit(", ", 1)[1].split(" ")[0])
        assert solid == len(gt) + num_correct and hatched == shown - num_correct
        assert num_correct <= correct[predictions["video_id"].to_numpy() == video_id].sum()
        assert axes.get_yticklabels()[0].get_text() == "ground truth"
    assert figure.axes[2].xaxis.get_major_formatter()(125.0, 0) == "2:05"  # minutes past 2 min
    assert figure.axes[0].xaxis.get_major_formatter()(12.5, 0) == "12.5"

    path = tmp_path / "timelines.png"
    assert plot_timelines(ground_truth, predictions, path, 3, 0.1, durations)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plot_timelines(ground_truth.iloc[:0], predictions, tmp_path / "none.png", 3, 0.1)
    assert not (tmp_path / "none.png").exists()


def test_without_durations_a_timeline_ends_at_the_last_segment():
    ground_truth, predictions = random_tables(6)
    figure = timeline_figure(ground_truth, predictions, 1, 0.5)
    v1 = pd.concat([ground_truth[ground_truth["video_id"] == "v1"]["end"],
                    predictions[predictions["video_id"] == "v1"]["end"]])
    assert figure.axes[0].get_xlim() == (0.0, v1.max())


def test_colours_beyond_the_legend_are_grey():
    names = [f"class {i:02d}" for i in range(30) for _ in range(30 - i)]  # class 00 most frequent
    colours = timeline_colours(names)
    named = [name for name, colour in colours.items() if colour != TIMELINE_OTHER_COLOUR]
    assert named == [f"class {i:02d}" for i in range(18)]
    assert len({colours[name] for name in named}) == 18
    assert all(colours[f"class {i:02d}"] == TIMELINE_OTHER_COLOUR for i in range(18, 30))


def test_write_report_passes_durations_to_the_timelines(tmp_path):
    from evaluation.detection import average_precision
    from evaluation.evaluate import HACS_HEAD, DetectionEvaluation

    ground_truth, predictions = random_tables(7)
    names = sorted(set(ground_truth["name"]))
    labelled_gt = ground_truth.assign(label=[names.index(n) for n in ground_truth["name"]])
    labelled_pred = predictions[predictions["name"].isin(names)]
    labelled_pred = labelled_pred.assign(label=[names.index(n) for n in labelled_pred["name"]])
    result = average_precision(labelled_gt, labelled_pred, [0.5, 0.75])
    result.class_names = [names[label] for label in result.class_labels]
    detection = DetectionEvaluation("hacs", {HACS_HEAD: result}, ground_truth, predictions)
    report = write_report(tmp_path, detection, video_durations={"v1": 80.0, "v2": 80.0, "v3": 80.0})
    assert "![Ground truth against the best detections](timelines.png)" in report.read_text()
    assert (tmp_path / "timelines.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
