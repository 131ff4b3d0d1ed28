"""Annotation loaders: HACS / ActivityNet JSON and EPIC-Kitchens-100 CSV (or pickle).

Every format loads into one `Annotations` record (DESIGN.md "One segment table"):

* `segments`: one row per ground-truth action, columns `video_id` (str), `start`,
  `end` (seconds, float64), `label` (int64 class index), `subset` (str) and, for
  EK-style data, `verb` and `noun` (int64) with `label = verb * num_nouns + noun`.
* `videos`: one row per video, columns `video_id`, `path` ("" until resolved),
  `duration` (seconds), `fps` (native; NaN when unknown), `subset`.
* `classes`: head name -> class names. HACS-style `{"label": [...]}`;
  EK-style `{"verb": [...], "noun": [...]}`.

A malformed file raises `AnnotationError` naming the file, the entry and the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data.ek100_csv import Ek100GroundTruth, read_ek100_csv, read_table
from data.errors import AnnotationError
from data.hacs_json import HacsGroundTruth, _number, read_hacs_json

SEGMENT_COLUMNS = ["video_id", "start", "end", "label", "subset"]
VIDEO_COLUMNS = ["video_id", "path", "duration", "fps", "subset"]



@dataclass
class Annotations:
    """A dataset's ground truth: the segment table, the video table and the class names."""

    segments: pd.DataFrame
    videos: pd.DataFrame
    classes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def style(self) -> str:
        """"ek100" when there are verb and noun heads, else "hacs"."""
        return "ek100" if "verb" in self.classes else "hacs"

    @property
    def num_nouns(self) -> int:
        return len(self.classes["noun"])

    @property
    def heads(self) -> dict[str, int]:
        """Head name -> number of classes, what the classifier is built with."""
        return {name: len(names) for name, names in self.classes.items()}

    def subset(self, name: str) -> Annotations:
        """The same record restricted to one subset (classes are kept whole)."""
        segments = self.segments[self.segments["subset"] == name].reset_index(drop=True)
        videos = self.videos[self.videos["subset"] == name].reset_index(drop=True)
        return Annotations(segments, videos, self.classes)


# --------------------------------------------------------------------------------------
# HACS / ActivityNet JSON


def load_hacs_json(path: str | Path, class_names: list[str] | None = None) -> Annotations:
    """Load a HACS or ActivityNet style JSON file (`{"database": {video_id: {...}}}`).

    Each video entry needs `subset` and `duration` (a number or a numeric string);
    `annotations` (a list of `{"label": name, "segment": [start_sec, end_sec]}`) may be
    absent for test videos. Classes are `class_names` when given (a label outside it is
    an error), else the sorted set of labels in the file. Read by
    :func:`data.hacs_json.read_hacs_json`; this makes the tables.
    """
    return hacs_annotations(read_hacs_json(path, class_names))


def hacs_annotations(ground_truth: HacsGroundTruth) -> Annotations:
    """The `Annotations` record of a HACS-style file's columns."""
    segment_video = ground_truth.segment_video
    segments = pd.DataFrame({
        "video_id": _strings(ground_truth.video_ids[segment_video]),
        "start": ground_truth.segments[:, 0].copy(),
        "end": ground_truth.segments[:, 1].copy(),
        "label": ground_truth.labels,
        "subset": _strings(ground_truth.video_subsets[segment_video]),
    })
    videos = pd.DataFrame({
        "video_id": _strings(ground_truth.video_ids),
        "path": _strings(np.full(len(ground_truth.video_ids), "", dtype=object)),
        "duration": ground_truth.durations,
        "fps": np.full(len(ground_truth.video_ids), math.nan),
        "subset": _strings(ground_truth.video_subsets),
    })
    return Annotations(segments, videos, {"label": list(ground_truth.class_names)})


def _strings(values: np.ndarray) -> pd.Series:
    """A string column, typed as pandas types a column of Python strings (also when empty)."""
    return pd.Series(values.tolist(), dtype=None if len(values) else object)


# --------------------------------------------------------------------------------------
# EPIC-Kitchens-100 CSV / pickle


def load_ek100_csv(
    path: str | Path,
    verb_classes_csv: str | Path | None = None,
    noun_classes_csv: str | Path | None = None,
    video_info_csv: str | Path | None = None,
    subset: str = "validation",
) -> Annotations:
    """Load an EPIC-Kitchens-100 segment file (CSV, or a pickle with the same columns;
    :func:`data.ek100_csv.read_ek100_csv` reads and checks it).

    Timestamps `HH:MM:SS.ff` become seconds. Verb and noun names come from the class
    files when given (97 verbs and 300 nouns for EK100); otherwise classes are numbered
    0..max seen. `label` is the action id `verb * num_nouns + noun`. Per-video duration
    and native fps come from `EPIC_100_video_info.csv` when given; otherwise the
    duration is the last segment end and the fps is NaN. All rows get `subset`.

    A *labelless* file, with neither `verb_class` nor `noun_class` (the leaderboard's
    `EPIC_100_test_timestamps.csv`), names the videos of a split used only for detection:
    its videos are loaded, with no ground-truth segments.
    """
    return ek100_annotations(read_ek100_csv(path, verb_classes_csv, noun_classes_csv, subset), video_info_csv)


def ek100_annotations(ground_truth: Ek100GroundTruth, video_info_csv: str | Path | None = None) -> Annotations:
    """The tables of an EK100 file's columns (see :func:`load_ek100_csv`)."""
    gt = ground_truth
    videos = _ek100_videos(gt, video_info_csv)
    if not gt.labelled:
        segments = pd.DataFrame({"video_id": pd.Series(dtype=str), "start": pd.Series(dtype=np.float64),
                                 "end": pd.Series(dtype=np.float64), "label": pd.Series(dtype=np.int64),
                                 "subset": pd.Series(dtype=str), "verb": pd.Series(dtype=np.int64),
                                 "noun": pd.Series(dtype=np.int64)})
        return Annotations(segments, videos, gt.classes)
    segments = pd.DataFrame({
        "video_id": _strings(gt.video_ids[gt.segment_video]),
        "start": gt.segments[:, 0],
        "end": gt.segments[:, 1],
        "label": gt.labels,
        "subset": gt.subset,
        "verb": gt.verbs,
        "noun": gt.nouns,
    })
    return Annotations(segments, videos, gt.classes)


def _ek100_videos(ground_truth: Ek100GroundTruth, video_info_csv) -> pd.DataFrame:
    """The video table, sorted by id: the last stop time as duration and NaN fps, unless
    `EPIC_100_video_info.csv` lists the video."""
    last_end = dict(zip(ground_truth.video_ids.tolist(), ground_truth.last_ends().tolist()))
    video_ids = sorted(last_end)
    duration = {vid: float(last_end[vid]) for vid in video_ids}
    fps = dict.fromkeys(video_ids, math.nan)
    if video_info_csv:
        info_path = Path(video_info_csv)
        info, _ = read_table(info_path)
        for column in ("video_id", "duration", "fps"):
            if column not in info:
                raise AnnotationError(info_path, "header", column, "missing column")
        listed = {str(vid): row for row, vid in enumerate(info["video_id"])}  # a repeated id: its last row
        for vid in video_ids:
            if vid in listed:
                duration[vid] = _number(info["duration"][listed[vid]], info_path, vid, "duration")
                fps[vid] = _number(info["fps"][listed[vid]], info_path, vid, "fps")
    return pd.DataFrame({
        "video_id": video_ids,
        "path": "",
        "duration": [duration[v] for v in video_ids],
        "fps": [fps[v] for v in video_ids],
        "subset": ground_truth.subset,
    })


# --------------------------------------------------------------------------------------
# Combining subsets and finding the videos


def concat_annotations(parts: list[Annotations]) -> Annotations:
    """Join per-subset records that share class lists (e.g. EK100 train + validation CSVs)."""
    if not parts:
        raise ValueError("no annotations to combine")
    for part in parts[1:]:
        if part.classes != parts[0].classes:
            raise ValueError("cannot combine annotation files with different class lists")
    segments = pd.concat([p.segments for p in parts], ignore_index=True)
    videos = pd.concat([p.videos for p in parts], ignore_index=True)
    duplicated = videos["video_id"].duplicated(keep=False)
    if duplicated.any():
        raise ValueError(f"video {videos['video_id'][duplicated].iloc[0]!r} appears in two subsets")
    return Annotations(segments, videos, parts[0].classes)


def resolve_video_paths(videos: pd.DataFrame, video_dir: str | Path, pattern: str) -> list[str]:
    """Fill `videos["path"]` from `video_dir / pattern`; return the ids whose file is missing.

    `pattern` has the placeholders `{video_id}` and `{participant}` (the part of an EK100 id
    before the first underscore, "P01_11" -> "P01"). An extension of `.*` takes whichever
    file exists (e.g. `.mp4`, `.MP4`, `.mkv`, `.webm`). Missing videos keep `path == ""`.
    """
    video_dir = Path(video_dir)
    missing = []
    paths = []
    for video_id in videos["video_id"]:
        relative = pattern.format(video_id=video_id, participant=video_id.split("_")[0])
        if relative.endswith(".*"):
            stem = video_dir / relative[:-2]
            found = sorted(p for p in stem.parent.glob(stem.name + ".*") if p.is_file())
            path = found[0] if found else None
        else:
            path = video_dir / relative
            path = path if path.is_file() else None
        if path is None:
            missing.append(video_id)
        paths.append(str(path) if path else "")
    videos["path"] = paths
    return missing
