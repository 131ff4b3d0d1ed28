"""``viewer.html``: one self-contained static page to look at detections on their videos.

The page needs no server and no network: CSS and JavaScript are inline, the data is embedded as
JSON in a ``<script type="application/json">`` tag, and a Content-Security-Policy forbids any
other source than the page itself and local files. Videos are referenced by a path relative to
the page's folder (a ``file://`` URL where no relative path exists, as across Windows drives), so
the page keeps working when the folder holding both is moved together.

What the page shows:

* a list of the videos (with their numbers of detections and ground-truth segments) and one
  ``<video>`` player for the selected one;
* the selected video's timeline over its whole duration: a time ruler, a ground-truth track (when
  ground truth is given) and a detections track. Bars are coloured per class (legend below), carry
  "class score" inside the bar where it fits, else beside it, and the full record as a tooltip;
  overlapping bars are stacked in rows (at most ``MAX_LANES``; the rest share the last row, and the
  page says so);
* a score slider: detections scored below it are hidden, and the page counts those shown;
* a click on any bar seeks the player to the bar's start; zoom buttons widen the timeline, which
  then scrolls horizontally.

Only the selected video's bars are in the page's DOM, so a page of many videos with a thousand
detections each stays responsive, and at most the best ``max_bars`` (a number field on the page,
200 unless ``write_viewer`` says otherwise) of those at or above the slider are drawn.

Elements the browser test (and anyone scripting the page) can rely on: ``#player``,
``.video-item[data-video-id]``, ``#score-threshold`` (the slider), ``#max-bars``, ``#visible-count``,
``.det-bar`` and ``.gt-bar`` with ``data-start``/``data-end`` (seconds), ``data-label``,
``data-score`` (detections), and ``#selected-bar`` (the description of the last clicked bar).
"""

from __future__ import annotations

import colorsys
import html
import json
import math
import os
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from runstate import atomic

DETECTION_FIELDS = ("video_id", "start_sec", "end_sec", "label", "score")
GROUND_TRUTH_FIELDS = ("video_id", "start_sec", "end_sec", "label")
SLIDER_MIN_POSITIONS = 500  # the score slider has at least this many positions over the range of scores
MAX_LANES = 10  # rows of stacked bars per track; further overlapping bars share the last row

# 18 distinct colours (matplotlib's tab10, then its lighter tab20 partners, greys left out), for the
# most frequent classes; further classes get hues spread by the golden angle.
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5",
]


@dataclass
class ViewerVideo:
    """One video of the page.

    Attributes:
        path: the video file (any format the browser plays: H.264, VP9 or AV1 in MP4 or WebM).
        duration_sec: its duration in seconds, the extent of its timeline (stretched to the end of
            its last segment if that is later); ``None`` takes the end of its last segment.
    """

    path: str | Path
    duration_sec: float | None


def write_viewer(
    path: str | Path,
    videos: Mapping[str, ViewerVideo | tuple[str | Path, float | None]],
    detections: Sequence[Mapping],
    ground_truth: Sequence[Mapping] | None = None,
    class_colours: Mapping[str, str] | None = None,
    title: str = "Detections",
    max_bars: int = 200,
) -> Path:
    """Write the viewer page to ``path`` (atomically) and return ``path``.

    Args:
        path: the page to write, e.g. ``<work_dir>/detect/viewer.html``; its folder is created.
        videos: video id -> :class:`ViewerVideo` (or a ``(path, duration_sec)`` pair), in the order
            the page lists them. The first is selected when the page opens.
        detections: records with ``video_id``, ``start_sec``, ``end_sec`` (seconds), ``label`` (the
            class's display name; for EK100 the action, "verb noun") and ``score``. Any other
            fields (``verb``, ``noun``, ...) are shown in the bar's tooltip.
        ground_truth: records with the same fields but ``score``; ``None`` for no ground-truth track.
        class_colours: class name -> CSS colour, overriding the page's palette for those classes.
        title: the page's title and heading.
        max_bars: the page draws at most this many detections of a video (the best of those at or
            above the slider); a number field on the page changes it.

    Raises:
        ValueError: a record lacks a field, has a non-finite or reversed segment, or names a video
            not in ``videos`` (the message names the record's position and field).
    """
    path = Path(path)
    page = viewer_html(path.parent, videos, detections, ground_truth, class_colours, title, max_bars)
    atomic.write_text(path, page)
    return path


def viewer_html(
    page_dir: str | Path,
    videos: Mapping[str, ViewerVideo | tuple[str | Path, float | None]],
    detections: Sequence[Mapping],
    ground_truth: Sequence[Mapping] | None = None,
    class_colours: Mapping[str, str] | None = None,
    title: str = "Detections",
    max_bars: int = 200,
) -> str:
    """The page's HTML for a page written into ``page_dir`` (arguments as :func:`write_viewer`)."""
    page_data = viewer_data(page_dir, videos, detections, ground_truth, class_colours, title, max_bars)
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        # the browser itself refuses anything but this page's inline code and local media
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self' file: blob:\">\n",
        f"<title>{html.escape(title)}</title>\n<style>{_PAGE_CSS}</style>\n</head>\n<body>\n",
        _PAGE_BODY.replace("{title}", html.escape(title)),
        "<script type=\"application/json\" id=\"viewer-data\">", embed_json(page_data), "</script>\n",
        "<script>", _PAGE_SCRIPT, "</script>\n</body>\n</html>\n",
    ])


def viewer_data(
    page_dir: str | Path,
    videos: Mapping[str, ViewerVideo | tuple[str | Path, float | None]],
    detections: Sequence[Mapping],
    ground_truth: Sequence[Mapping] | None = None,
    class_colours: Mapping[str, str] | None = None,
    title: str = "Detections",
    max_bars: int = 200,
) -> dict:
    """The JSON document the page embeds (arguments as :func:`write_viewer`).

    Layout::

        {"title": str,
         "has_ground_truth": bool,
         "classes": [{"name", "colour", "text_colour"}, ...],      # most frequent first
         "score": {"min", "max", "step"},                          # the slider
         "max_bars": int,                                          # per video, the best first
         "videos": [{"id", "src", "duration_sec",
                     "detections": [[start_sec, end_sec, class_index, score, details], ...],  # best first
                     "ground_truth": [[start_sec, end_sec, class_index, details], ...]},      # by start
                    ...]}

    ``details`` is a list of ``[field, value]`` pairs: the record's extra fields, for the tooltip.
    """
    entries = {str(video_id): _as_viewer_video(entry) for video_id, entry in videos.items()}
    detection_rows = _check_records(detections, DETECTION_FIELDS, "detection", entries)
    gt_rows = _check_records(ground_truth or [], GROUND_TRUTH_FIELDS, "ground-truth segment", entries)

    counts = Counter(record["label"] for record in detection_rows + gt_rows)
    class_names = sorted(counts, key=lambda name: (-counts[name], name))
    colours = class_palette(class_names)
    colours.update({name: colour for name, colour in (class_colours or {}).items() if name in colours})
    class_index = {name: i for i, name in enumerate(class_names)}

    per_video: dict[str, dict[str, list]] = {video_id: {"detections": [], "ground_truth": []} for video_id in entries}
    for record in detection_rows:
        per_video[record["video_id"]]["detections"].append(
            [record["start_sec"], record["end_sec"], class_index[record["label"]], record["score"], record["details"]])
    for record in gt_rows:
        per_video[record["video_id"]]["ground_truth"].append(
            [record["start_sec"], record["end_sec"], class_index[record["label"]], record["details"]])

    video_records = []
    for video_id, entry in entries.items():
        rows = per_video[video_id]
        rows["detections"].sort(key=lambda row: -row[3])  # stable: equal scores keep their input order
        rows["ground_truth"].sort(key=lambda row: row[0])
        last_end = max((row[1] for row in rows["detections"] + rows["ground_truth"]), default=0.0)
        duration = entry.duration_sec
        if duration is None or not math.isfinite(duration) or duration <= 0:
            duration = last_end or 1.0
        duration = max(duration, last_end)  # a segment past the given duration still shows whole
        video_records.append({"id": video_id, "src": video_url(entry.path, page_dir),
                              "duration_sec": float(duration), **rows})

    return {
        "title": title,
        "has_ground_truth": ground_truth is not None,
        "classes": [{"name": name, "colour": colours[name], "text_colour": text_colour(colours[name])}
                    for name in class_names],
        "score": score_slider([record["score"] for record in detection_rows]),
        "max_bars": int(max_bars),
        "videos": video_records,
    }


def score_slider(scores: Sequence[float]) -> dict[str, float]:
    """The score slider's ``{"min", "max", "step"}`` for the detections' ``scores``.

    The step is the largest power of ten that gives at least ``SLIDER_MIN_POSITIONS`` positions
    between ``min(0, lowest score)`` and the highest score (0.001 for scores spread over [0, 1];
    1e-6 for EK100 action scores of a few thousandths), and the ends are rounded out to it and
    written with the step's decimals (the form in which the browser's range input holds them).
    """
    low, high = min([0.0, *scores]), max(scores, default=1.0)
    if high <= low:
        high = low + 1.0
    exponent = math.floor(math.log10((high - low) / SLIDER_MIN_POSITIONS))
    step = float(f"1e{exponent}")
    decimals = max(0, -exponent)
    return {"min": round(math.floor(low / step) * step, decimals),
            "max": round(math.ceil(high / step) * step, decimals), "step": step}


def video_url(video_path: str | Path, page_dir: str | Path) -> str:
    """How the page refers to ``video_path``: a percent-encoded path relative to ``page_dir``, or a
    ``file://`` URL where no relative path exists (another drive on Windows)."""
    absolute = Path(video_path).resolve()
    try:
        relative = os.path.relpath(absolute, Path(page_dir).resolve())
    except ValueError:
        return absolute.as_uri()
    return urllib.parse.quote(Path(relative).as_posix())


def class_palette(class_names: Sequence[str]) -> dict[str, str]:
    """Class name -> ``#rrggbb``, in the order given (most frequent first).

    The first classes take ``PALETTE`` in order. Each further class takes, from a grid of 36 hues
    by 3 lightnesses, the colour farthest (RGB distance) from every colour given so far, so that
    similar colours are as rare as their number allows; once the grid is used up it starts again.
    """
    grid = [colorsys.hls_to_rgb(hue / 36, lightness, 0.7) for lightness in (0.35, 0.5, 0.68) for hue in range(36)]
    grid = [tuple(255 * channel for channel in rgb) for rgb in grid]
    colours: dict[str, str] = {}
    nearest = [math.inf] * len(grid)  # per grid colour: distance to the nearest colour given so far

    def give(name: str, rgb: tuple[float, float, float]) -> None:
        colours[name] = "#" + "".join(f"{round(channel):02x}" for channel in rgb)
        for k, candidate in enumerate(grid):
            nearest[k] = min(nearest[k], math.dist(candidate, rgb))

    for i, name in enumerate(class_names):
        if i < len(PALETTE):
            give(name, tuple(int(PALETTE[i][c:c + 2], 16) for c in (1, 3, 5)))
            continue
        if max(nearest) == 0:  # every grid colour is taken: go round again
            nearest[:] = [math.inf] * len(grid)
        give(name, grid[max(range(len(grid)), key=nearest.__getitem__)])
    return colours


def text_colour(colour: str) -> str:
    """Black or white, whichever reads better on ``colour`` (``#rrggbb``; other forms get black)."""
    if len(colour) != 7 or not colour.startswith("#"):
        return "#000000"
    try:
        red, green, blue = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    except ValueError:
        return "#000000"
    luma = 0.299 * red + 0.587 * green + 0.114 * blue  # ITU-R BT.601 weights
    return "#000000" if luma > 0.55 else "#ffffff"


def embed_json(data: object) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element: every ``<`` is written as the
    JSON escape ``\\u003c``, so no label can close the element (``</script>``) or open a comment."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def _as_viewer_video(entry: ViewerVideo | tuple[str | Path, float | None]) -> ViewerVideo:
    if isinstance(entry, ViewerVideo):
        return entry
    path, duration_sec = entry
    return ViewerVideo(path, duration_sec)


def _check_records(records: Sequence[Mapping], fields: tuple[str, ...], kind: str,
                   videos: Mapping[str, ViewerVideo]) -> list[dict]:
    """Validated copies of ``records``: floats for times and scores, extra fields under ``details``."""
    checked = []
    for position, record in enumerate(records):
        where = f"{kind} {position}"
        missing = [field for field in fields if field not in record]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing} (has {sorted(record)})")
        video_id = str(record["video_id"])
        if video_id not in videos:
            raise ValueError(f"{where}: video_id {video_id!r} is not among the page's videos")
        row = {"video_id": video_id, "label": str(record["label"])}
        for field in fields:
            if field in ("video_id", "label"):
                continue
            try:
                row[field] = float(record[field])
            except (TypeError, ValueError):
                raise ValueError(f"{where}: field {field!r} is not a number: {record[field]!r}") from None
            if not math.isfinite(row[field]):
                raise ValueError(f"{where}: field {field!r} is not finite: {record[field]!r}")
        if row["end_sec"] < row["start_sec"]:
            raise ValueError(f"{where}: end_sec {row['end_sec']} is before start_sec {row['start_sec']}")
        row["details"] = [[str(key), _json_scalar(value)] for key, value in record.items() if key not in fields]
        checked.append(row)
    return checked


def _json_scalar(value: object) -> str | int | float | bool | None:
    """A value JSON can hold as it is (numpy scalars become Python numbers; anything else its str)."""
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        value = value.item()
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


# --------------------------------------------------------------------------------------
# The page: markup, style and script (no external resource of any kind)

_PAGE_BODY = """<header><h1>{title}</h1><span id="summary"></span></header>
<div id="layout">
<nav id="video-list" aria-label="videos"></nav>
<main id="main">
<video id="player" controls preload="auto" playsinline></video>
<div id="video-error" hidden></div>
<div id="controls">
<label for="score-threshold">min score</label>
<input type="range" id="score-threshold">
<output id="threshold-value" for="score-threshold"></output>
<label for="max-bars">at most</label>
<input type="number" id="max-bars" min="1" step="1">
<span id="visible-count"></span>
<span class="spacer"></span>
<button type="button" id="zoom-out" title="zoom out">&minus;</button>
<span id="zoom-value">1&times;</span>
<button type="button" id="zoom-in" title="zoom in">+</button>
</div>
<div id="timeline-scroll"><div id="timeline">
<div class="row"><div class="row-name">time</div><div class="row-body" id="ruler"></div></div>
<div class="row" id="gt-row"><div class="row-name">ground truth</div>
<div class="row-body track" id="gt-track"></div></div>
<div class="row"><div class="row-name">detections</div><div class="row-body track" id="det-track"></div></div>
</div></div>
<div id="overflow-note" hidden></div>
<div id="selected-bar">Click a bar to play the video from its start.</div>
<div id="legend"></div>
</main>
</div>
"""

_PAGE_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif;
       color: #1d1d1f; background: #f6f6f4; }
header { display: flex; gap: 16px; align-items: baseline; padding: 8px 16px; background: #fff;
         border-bottom: 1px solid #ddd; }
h1 { font-size: 16px; margin: 0; }
#summary { color: #666; }
#layout { display: grid; grid-template-columns: 230px minmax(0, 1fr); height: calc(100vh - 41px); }
#video-list { overflow-y: auto; background: #fff; border-right: 1px solid #ddd; }
.video-item { display: block; width: 100%; padding: 6px 12px; border: 0; border-bottom: 1px solid #eee;
              background: none; font: inherit; text-align: left; cursor: pointer; }
.video-item:hover { background: #f0f4fa; }
.video-item.selected { background: #dde8f8; font-weight: 600; }
.video-item small { display: block; color: #666; font-weight: 400; }
#main { overflow-y: auto; padding: 12px 16px; }
#player { display: block; width: auto; max-width: 100%; height: 36vh; min-height: 160px; background: #000; }
#video-error { margin-top: 6px; padding: 6px 10px; color: #8a1c1c; background: #fde8e8; border-radius: 4px; }
#controls { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 8px; margin: 10px 0 6px; }
#controls label, #visible-count { white-space: nowrap; }
#controls .spacer { flex: 1; }
#score-threshold { width: 240px; }
#max-bars { width: 64px; font: inherit; }
#threshold-value { min-width: 44px; font-variant-numeric: tabular-nums; }
#visible-count { color: #444; }
#controls button { min-width: 28px; font: inherit; }
#timeline-scroll { overflow-x: auto; background: #fff; border: 1px solid #ddd; border-radius: 4px; }
#timeline { position: relative; min-width: 100%; }
.row { display: flex; border-bottom: 1px solid #eee; }
.row:last-child { border-bottom: 0; }
.row-name { flex: 0 0 96px; position: sticky; left: 0; z-index: 5; padding: 3px 8px; color: #555;
            background: #fff; border-right: 1px solid #eee; }
.row-body { position: relative; flex: 1 1 auto; min-height: 24px; overflow: hidden; }
#ruler { height: 24px; }
.tick { position: absolute; top: 0; height: 100%; border-left: 1px solid #ccc; padding-left: 3px;
        color: #666; font-size: 11px; white-space: nowrap; }
.bar { position: absolute; height: 19px; min-width: 3px; margin-top: 2px; padding: 0 4px; border-radius: 3px;
       font-size: 11px; line-height: 19px; white-space: nowrap; cursor: pointer; contain: layout style; }
.bar-label { display: block; overflow: hidden; text-overflow: ellipsis; }
.bar[data-label-side="right"] .bar-label, .bar[data-label-side="left"] .bar-label {
       position: absolute; top: 0; overflow: visible; color: #1d1d1f; }
.bar[data-label-side="right"] .bar-label { left: calc(100% + 3px); }
.bar[data-label-side="left"] .bar-label { right: calc(100% + 3px); }
.bar[hidden] { display: none; }
.gt-bar { border: 2px dashed rgba(0, 0, 0, 0.55); line-height: 15px; }
.gt-bar[data-label-side="right"] .bar-label, .gt-bar[data-label-side="left"] .bar-label { top: -2px; }
.det-bar[data-label-side="right"] .bar-label, .det-bar[data-label-side="left"] .bar-label { top: -1px; }
.det-bar { border: 1px solid rgba(0, 0, 0, 0.35); }
.bar:hover { outline: 2px solid #000; z-index: 3; }
.bar.active { box-shadow: 0 0 0 2px #fff, 0 0 0 4px #d00; z-index: 2; }
.playhead { position: absolute; top: 0; bottom: 0; width: 2px; margin-left: -1px; background: #d00;
            pointer-events: none; z-index: 4; }
#overflow-note { margin-top: 4px; color: #8a5a00; }
#selected-bar { margin: 8px 0; padding: 6px 10px; min-height: 32px; background: #fff; border: 1px solid #ddd;
                border-radius: 4px; white-space: pre-wrap; }
#legend { display: flex; flex-wrap: wrap; gap: 4px 14px; }
.legend-item { display: inline-flex; align-items: center; gap: 5px; }
.swatch { width: 14px; height: 14px; border-radius: 3px; border: 1px solid rgba(0, 0, 0, 0.35); }
.legend-item small { color: #777; }
"""

_PAGE_SCRIPT = r"""
"use strict";
// The data (layout in localize/viewer.py, viewer_data). Records are arrays:
//   detection    [start_sec, end_sec, class_index, score, details]
//   ground truth [start_sec, end_sec, class_index, details]
const DATA = JSON.parse(document.getElementById("viewer-data").textContent);
const LANE_PX = 23;       // height of one row of bars
const MAX_LANES = 10;     // rows per track; further overlapping bars share the last row
const NAME_PX = 96;       // width of the track names column
const MIN_GAP_PX = 4;     // bars closer than this go to different rows
const LABEL_PAD_PX = 4;   // a label's padding, each side
const MAX_ZOOM = 1024;

const player = document.getElementById("player");
const slider = document.getElementById("score-threshold");
const maxBarsInput = document.getElementById("max-bars");
const thresholdValue = document.getElementById("threshold-value");
const visibleCount = document.getElementById("visible-count");
const scroller = document.getElementById("timeline-scroll");
const timeline = document.getElementById("timeline");
const ruler = document.getElementById("ruler");
const gtTrack = document.getElementById("gt-track");
const detTrack = document.getElementById("det-track");
const videoError = document.getElementById("video-error");
const overflowNote = document.getElementById("overflow-note");
const selectedBar = document.getElementById("selected-bar");

const state = {
  video: -1,        // index into DATA.videos
  zoom: 1,
  detBars: [],      // {el, start, end, score, labelPx} of the selected video, best first
  gtBars: [],       // {el, start, end, score: null, labelPx}, by start
  playheads: [],
};

function formatTime(sec, decimals = 2) {  // 75.5 -> "1:15.50"
  const minutes = Math.floor(sec / 60);
  const seconds = (sec - 60 * minutes).toFixed(decimals);
  return minutes + ":" + (parseFloat(seconds) < 10 ? "0" : "") + seconds;
}

function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}

function describe(kind, video, start, end, classIndex, score, details) {
  const heading = kind === "det" ? "  score " + score.toPrecision(3) : "  (ground truth)";
  const lines = [DATA.classes[classIndex].name + heading,
                 formatTime(start) + " - " + formatTime(end) + "  (" + (end - start).toFixed(2) + " s)  " + video.id];
  for (const [key, value] of details) lines.push(key + ": " + value);
  return lines.join("\n");
}

function makeBar(kind, video, record) {
  const [start, end, classIndex] = record;
  const score = kind === "det" ? record[3] : null;
  const details = kind === "det" ? record[4] : record[3];
  const cls = DATA.classes[classIndex];
  const el = document.createElement("div");
  el.className = "bar " + (kind === "det" ? "det-bar" : "gt-bar");
  el.dataset.start = String(start);
  el.dataset.end = String(end);
  el.dataset.label = cls.name;
  if (kind === "det") el.dataset.score = String(score);
  el.style.left = (100 * start / video.duration_sec) + "%";
  el.style.width = (100 * (end - start) / video.duration_sec) + "%";
  el.style.background = cls.colour;
  el.style.color = cls.text_colour;
  const label = document.createElement("span");
  label.className = "bar-label";
  label.textContent = kind === "det" ? cls.name + " " + formatScore(score) : cls.name;
  el.appendChild(label);
  el.title = describe(kind, video, start, end, classIndex, score, details);
  return {el, start, end, score, labelPx: textWidthPx(label.textContent)};
}

let measuringContext = null;
function textWidthPx(text) {  // in the bars' font
  if (measuringContext === null) {
    measuringContext = document.createElement("canvas").getContext("2d");
    measuringContext.font = "11px " + getComputedStyle(document.body).fontFamily;
  }
  return measuringContext.measureText(text).width;
}

// Rows for bars in the given order (detections best first, ground truth by start). Each bar goes
// to the first row where it overlaps no other bar (MIN_GAP_PX apart), with room for its label:
// inside the bar if it fits there, else to its right or left; failing that, unlabelled (the label
// is cut to the bar); failing that too, in the last of the MAX_LANES rows, over what is there.
function packLanes(bars, track, widthPx) {
  const duration = DATA.videos[state.video].duration_sec;
  const secPerPx = duration / widthPx;
  const gap = MIN_GAP_PX * secPerPx;
  const lanes = [];  // lanes[i]: [start, end] of what is placed in row i (bars and their labels)
  const findLane = (start, end) => {
    const lane = lanes.findIndex(placed => placed.every(([s, e]) => end + gap <= s || e + gap <= start));
    if (lane >= 0 || lanes.length >= MAX_LANES) return lane;
    lanes.push([]);
    return lanes.length - 1;
  };
  let overflow = 0;
  for (const bar of bars) {
    const barEnd = Math.max(bar.end, bar.start + 3 * secPerPx);  // the bar's drawn extent (min-width)
    const labelSec = (bar.labelPx + 2 * LABEL_PAD_PX) * secPerPx;
    const choices = labelSec <= bar.end - bar.start ? [["inside", bar.start, barEnd]]
      : [["right", bar.start, barEnd + labelSec], ["left", bar.start - labelSec, barEnd]]
          .filter(([, start, end]) => start >= 0 && end <= duration);
    choices.push(["cut", bar.start, barEnd]);
    let lane = -1;
    for (const [side, start, end] of choices) {
      lane = findLane(start, end);
      if (lane >= 0) {
        lanes[lane].push([start, end]);
        bar.el.dataset.labelSide = side;
        break;
      }
    }
    if (lane < 0) {
      lane = MAX_LANES - 1;
      overflow += 1;
      bar.el.dataset.labelSide = "cut";
    }
    bar.el.style.top = (lane * LANE_PX) + "px";
  }
  track.style.height = (Math.max(1, lanes.length) * LANE_PX + 2) + "px";
  return overflow;
}

// Every track body is as wide as the ruler. Measured before any change, so that the browser lays
// the page out once after the change rather than once per measurement.
function trackWidthPx() {
  return Math.max(1, ruler.clientWidth);
}

function formatScore(score) {  // 0.8734 -> "0.87", 0.003012 -> "0.0030"
  return score >= 0.01 || score === 0 ? score.toFixed(2) : score.toPrecision(2);
}

function applyThreshold() {
  const widthPx = trackWidthPx();
  const threshold = parseFloat(slider.value);
  thresholdValue.textContent = threshold.toFixed(Math.max(0, -Math.floor(Math.log10(DATA.score.step))));
  const maxBars = Math.max(1, parseInt(maxBarsInput.value, 10) || DATA.max_bars);
  const shown = [];  // the best maxBars at or above the threshold (detBars are best first)
  let above = 0;
  for (const bar of state.detBars) {
    if (bar.score >= threshold) above += 1;
    bar.el.hidden = !(bar.score >= threshold && shown.length < maxBars);
    if (!bar.el.hidden) shown.push(bar);
  }
  visibleCount.textContent = shown.length + " of " + plural(state.detBars.length, "detection") + " shown" +
    (above > shown.length ? " (the best of " + above + " \u2265 min score)" : "");
  layout(widthPx, shown);
}

function layout(widthPx, shownDetBars) {
  const shown = shownDetBars || state.detBars.filter(bar => !bar.el.hidden);
  const overflow = packLanes(shown, detTrack, widthPx) + packLanes(state.gtBars, gtTrack, widthPx);
  overflowNote.hidden = overflow === 0;
  overflowNote.textContent = overflow + " overlapping bars share the last row; raise the min score or zoom in.";
  drawRuler(widthPx);
}

function drawRuler(widthPx) {
  ruler.replaceChildren();
  const duration = DATA.videos[state.video].duration_sec;
  const rough = duration * 90 / widthPx;  // seconds per ~90 px
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = [1, 2, 5, 10].map(m => m * power).find(s => s >= rough);
  for (let i = 0; i * step <= duration + 1e-9; i++) {
    const t = i * step;
    const tick = document.createElement("div");
    tick.className = "tick";
    tick.style.left = (100 * t / duration) + "%";
    tick.textContent = formatTime(t, step >= 1 ? 0 : step >= 0.1 ? 1 : 2);
    ruler.appendChild(tick);
  }
  addPlayhead(ruler);
}

function addPlayhead(body) {
  const head = document.createElement("div");
  head.className = "playhead";
  body.appendChild(head);
  state.playheads = state.playheads.filter(h => h.isConnected).concat([head]);
  movePlayhead();
}

// The playhead follows the player; bars under it are outlined; a zoomed timeline scrolls along.
function movePlayhead() {
  if (state.video < 0) return;
  const video = DATA.videos[state.video];
  const t = Math.min(player.currentTime || 0, video.duration_sec);
  for (const head of state.playheads) head.style.left = (100 * t / video.duration_sec) + "%";
  for (const bar of state.detBars.concat(state.gtBars)) {
    bar.el.classList.toggle("active", bar.start <= t && t < bar.end);
  }
  if (state.zoom > 1 && !player.paused) {
    const x = NAME_PX + t / video.duration_sec * (timeline.clientWidth - NAME_PX);
    if (x < scroller.scrollLeft + NAME_PX || x > scroller.scrollLeft + scroller.clientWidth) {
      scroller.scrollLeft = x - NAME_PX - 20;
    }
  }
}

function followPlayback() {
  movePlayhead();
  if (!player.paused && !player.ended) requestAnimationFrame(followPlayback);
}

function setZoom(zoom) {
  // the time at the middle of the view, as a fraction of the video, stays in the middle
  const width = Math.max(1, timeline.clientWidth - NAME_PX);
  const centre = (scroller.scrollLeft + scroller.clientWidth / 2 - NAME_PX) / width;
  state.zoom = Math.min(MAX_ZOOM, Math.max(1, zoom));
  document.getElementById("zoom-value").textContent = state.zoom + "\u00d7";
  // at 1x the timeline is as wide as its box (CSS), whatever scroll bars come and go
  timeline.style.width = state.zoom === 1 ? "" : (NAME_PX + state.zoom * (scroller.clientWidth - NAME_PX)) + "px";
  scroller.scrollLeft = NAME_PX + centre * (timeline.clientWidth - NAME_PX) - scroller.clientWidth / 2;
  if (state.video >= 0) layout(trackWidthPx());
}

function selectVideo(index) {
  if (index === state.video) return;
  state.video = index;
  const video = DATA.videos[index];
  for (const item of document.querySelectorAll(".video-item")) {
    item.classList.toggle("selected", Number(item.dataset.index) === index);
  }
  videoError.hidden = true;
  player.src = video.src;
  detTrack.replaceChildren();
  gtTrack.replaceChildren();
  state.detBars = video.detections.map(record => makeBar("det", video, record));
  state.gtBars = video.ground_truth.map(record => makeBar("gt", video, record));
  const detFragment = document.createDocumentFragment();
  // worst first in the DOM, so that where bars share a row the best is drawn on top
  for (let i = state.detBars.length - 1; i >= 0; i--) detFragment.appendChild(state.detBars[i].el);
  detTrack.appendChild(detFragment);
  for (const bar of state.gtBars) gtTrack.appendChild(bar.el);
  state.playheads = [];
  addPlayhead(detTrack);
  addPlayhead(gtTrack);
  drawLegend(video);
  applyThreshold();
}

function seekTo(timeSec) {
  const apply = () => { player.currentTime = timeSec; };
  if (player.readyState >= HTMLMediaElement.HAVE_METADATA) apply();
  else player.addEventListener("loadedmetadata", apply, {once: true});
}

function onBarClick(event) {
  const el = event.target.closest(".bar");
  if (!el) return;
  selectedBar.textContent = el.title;
  seekTo(parseFloat(el.dataset.start));
}

function drawLegend(video) {
  const legend = document.getElementById("legend");
  legend.replaceChildren();
  const counts = new Map();
  for (const record of video.detections.concat(video.ground_truth)) {
    counts.set(record[2], (counts.get(record[2]) || 0) + 1);
  }
  const present = [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a - b);
  for (const classIndex of present) {
    const cls = DATA.classes[classIndex];
    const item = document.createElement("span");
    item.className = "legend-item";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = cls.colour;
    const name = document.createElement("span");
    name.textContent = cls.name;
    const count = document.createElement("small");
    count.textContent = String(counts.get(classIndex));
    item.append(swatch, name, count);
    legend.appendChild(item);
  }
}

function buildVideoList() {
  const list = document.getElementById("video-list");
  DATA.videos.forEach((video, index) => {
    const item = document.createElement("button");
    item.type = "button";
    item.className = "video-item";
    item.dataset.index = String(index);
    item.dataset.videoId = video.id;
    item.textContent = video.id;
    const info = document.createElement("small");
    info.textContent = plural(video.detections.length, "detection") +
      (DATA.has_ground_truth ? ", " + video.ground_truth.length + " ground truth" : "") +
      ", " + formatTime(video.duration_sec);
    item.appendChild(info);
    item.addEventListener("click", () => selectVideo(index));
    list.appendChild(item);
  });
}

function start() {
  document.getElementById("gt-row").hidden = !DATA.has_ground_truth;
  const numDetections = DATA.videos.reduce((n, video) => n + video.detections.length, 0);
  document.getElementById("summary").textContent =
    plural(DATA.videos.length, "video") + ", " + plural(numDetections, "detection") + ", " +
    plural(DATA.classes.length, "class").replace("classs", "classes");
  slider.min = String(DATA.score.min);
  slider.max = String(DATA.score.max);
  slider.step = String(DATA.score.step);
  slider.value = String(DATA.score.min);
  slider.addEventListener("input", applyThreshold);
  maxBarsInput.value = String(DATA.max_bars);
  maxBarsInput.addEventListener("input", applyThreshold);
  detTrack.addEventListener("click", onBarClick);
  gtTrack.addEventListener("click", onBarClick);
  document.getElementById("zoom-in").addEventListener("click", () => setZoom(state.zoom * 2));
  document.getElementById("zoom-out").addEventListener("click", () => setZoom(state.zoom / 2));
  window.addEventListener("resize", () => setZoom(state.zoom));
  player.addEventListener("timeupdate", movePlayhead);
  player.addEventListener("seeked", movePlayhead);
  player.addEventListener("play", () => requestAnimationFrame(followPlayback));
  player.addEventListener("error", () => {
    const error = player.error;
    videoError.hidden = false;
    videoError.textContent = "Cannot play " + decodeURI(player.getAttribute("src")) + " (media error " +
      (error ? error.code + (error.message ? ": " + error.message : "") : "?") +
      "). Browsers play H.264, VP9 or AV1 video in MP4 or WebM; the timeline still works.";
  });
  buildVideoList();
  setZoom(1);
  if (DATA.videos.length > 0) selectVideo(0);
  document.body.dataset.ready = "true";
}

start();
"""
