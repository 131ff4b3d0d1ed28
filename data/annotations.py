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
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from data.errors import AnnotationError
from data.hacs_json import SUBSETS, HacsGroundTruth, _number, read_hacs_json

SEGMENT_COLUMNS = ["video_id", "start", "end", "label", "subset"]
VIDEO_COLUMNS = ["video_id", "path", "duration", "fps", "subset"]

EK100_REQUIRED_COLUMNS = ("video_id", "start_timestamp", "stop_timestamp", "verb_class", "noun_class")

_TIMESTAMP = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)$")


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


def parse_timestamp(text: str) -> float:
    """`"HH:MM:SS.ff"` -> seconds. Raises ValueError on anything else."""
    match = _TIMESTAMP.match(str(text).strip())
    if not match:
        raise ValueError(f"not an HH:MM:SS.ff timestamp: {text!r}")
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def load_class_names(path: str | Path) -> list[str]:
    """EK100 class file (`id,key,...`) -> names ordered by id; ids must be 0..K-1."""
    path = Path(path)
    table = _read_table(path)
    for column in ("id", "key"):
        if column not in table.columns:
            raise AnnotationError(path, "header", column, "missing column")
    ids = pd.to_numeric(table["id"], errors="coerce")
    if ids.isna().any() or sorted(ids.astype(int)) != list(range(len(table))):
        raise AnnotationError(path, "all rows", "id", "ids must be the integers 0..K-1")
    return [str(key) for _, key in sorted(zip(ids.astype(int), table["key"]))]


def load_ek100_csv(
    path: str | Path,
    verb_classes_csv: str | Path | None = None,
    noun_classes_csv: str | Path | None = None,
    video_info_csv: str | Path | None = None,
    subset: str = "validation",
) -> Annotations:
    """Load an EPIC-Kitchens-100 segment file (CSV, or a pickle with the same columns).

    Timestamps `HH:MM:SS.ff` become seconds. Verb and noun names come from the class
    files when given (97 verbs and 300 nouns for EK100); otherwise classes are numbered
    0..max seen. `label` is the action id `verb * num_nouns + noun`. Per-video duration
    and native fps come from `EPIC_100_video_info.csv` when given; otherwise the
    duration is the last segment end and the fps is NaN. All rows get `subset`.

    A *labelless* file, with neither `verb_class` nor `noun_class` (the leaderboard's
    `EPIC_100_test_timestamps.csv`), names the videos of a split used only for detection:
    its videos are loaded, with no ground-truth segments.
    """
    path = Path(path)
    if subset not in SUBSETS:
        raise AnnotationError(path, "-", "subset", f"must be one of {list(SUBSETS)}, got {subset!r}")
    table = _read_table(path)
    labelless = "verb_class" not in table.columns and "noun_class" not in table.columns
    for column in EK100_REQUIRED_COLUMNS:
        if column not in table.columns and not (labelless and column in ("verb_class", "noun_class")):
            raise AnnotationError(path, "header", column, "missing column")
    entry_names = table["narration_id"] if "narration_id" in table.columns else pd.Series(table.index)

    starts, ends = [], []
    for row, (entry, start_text, stop_text) in enumerate(
        zip(entry_names, table["start_timestamp"], table["stop_timestamp"])
    ):
        where = f"row {row + 2} ({entry})"  # +2: one-based, after the header line
        try:
            start = parse_timestamp(start_text)
        except ValueError as error:
            raise AnnotationError(path, where, "start_timestamp", str(error)) from None
        try:
            end = parse_timestamp(stop_text)
        except ValueError as error:
            raise AnnotationError(path, where, "stop_timestamp", str(error)) from None
        if end < start:
            raise AnnotationError(path, where, "stop_timestamp", f"end {stop_text} is before start {start_text}")
        starts.append(start)
        ends.append(end)

    if labelless:
        listed = pd.DataFrame({"video_id": table["video_id"].astype(str).to_numpy(),
                               "end": np.asarray(ends, dtype=np.float64)})
        verb_names = load_class_names(verb_classes_csv) if verb_classes_csv else []
        noun_names = load_class_names(noun_classes_csv) if noun_classes_csv else []
        segments = pd.DataFrame({"video_id": pd.Series(dtype=str), "start": pd.Series(dtype=np.float64),
                                 "end": pd.Series(dtype=np.float64), "label": pd.Series(dtype=np.int64),
                                 "subset": pd.Series(dtype=str), "verb": pd.Series(dtype=np.int64),
                                 "noun": pd.Series(dtype=np.int64)})
        return Annotations(segments, _ek100_videos(listed, video_info_csv, subset),
                           {"verb": verb_names, "noun": noun_names})
    verbs = _int_column(table, "verb_class", path, entry_names)
    nouns = _int_column(table, "noun_class", path, entry_names)
    verb_names = load_class_names(verb_classes_csv) if verb_classes_csv else _numbered("verb", verbs)
    noun_names = load_class_names(noun_classes_csv) if noun_classes_csv else _numbered("noun", nouns)
    for name, values, names in (("verb_class", verbs, verb_names), ("noun_class", nouns, noun_names)):
        bad = np.flatnonzero((values < 0) | (values >= len(names)))
        if bad.size:
            row = int(bad[0])
            raise AnnotationError(path, f"row {row + 2} ({entry_names.iloc[row]})", name,
                                  f"class {values[row]} outside 0..{len(names) - 1}")

    segments = pd.DataFrame({
        "video_id": table["video_id"].astype(str).to_numpy(),
        "start": np.asarray(starts, dtype=np.float64),
        "end": np.asarray(ends, dtype=np.float64),
        "label": verbs * len(noun_names) + nouns,
        "subset": subset,
        "verb": verbs,
        "noun": nouns,
    })
    videos = _ek100_videos(segments, video_info_csv, subset)
    return Annotations(segments, videos, {"verb": verb_names, "noun": noun_names})


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise AnnotationError(path, "-", "-", "file not found")
    try:
        if path.suffix in (".pkl", ".pickle"):
            table = pd.read_pickle(path)
            if table.index.name is not None:  # the EK100 pickles index rows by narration_id
                table = table.reset_index()
            return table
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise AnnotationError(path, "-", "-", f"cannot be read as a table ({error})") from None


def _int_column(table: pd.DataFrame, column: str, path: Path, entry_names: pd.Series) -> np.ndarray:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise AnnotationError(path, f"row {row + 2} ({entry_names.iloc[row]})", column,
                              f"must be an integer class, got {table[column].iloc[row]!r}")
    return values.to_numpy().astype(np.int64)


def _numbered(prefix: str, values: np.ndarray) -> list[str]:
    count = int(values.max()) + 1 if values.size else 0
    return [f"{prefix}_{i}" for i in range(count)]


def _ek100_videos(segments: pd.DataFrame, video_info_csv, subset: str) -> pd.DataFrame:
    video_ids = sorted(segments["video_id"].unique())
    last_end = segments.groupby("video_id")["end"].max()
    duration = {vid: float(last_end[vid]) for vid in video_ids}
    fps = dict.fromkeys(video_ids, math.nan)
    if video_info_csv:
        info_path = Path(video_info_csv)
        info = _read_table(info_path)
        for column in ("video_id", "duration", "fps"):
            if column not in info.columns:
                raise AnnotationError(info_path, "header", column, "missing column")
        info = info.set_index(info["video_id"].astype(str))
        for vid in video_ids:
            if vid in info.index:
                duration[vid] = _number(info.at[vid, "duration"], info_path, vid, "duration")
                fps[vid] = _number(info.at[vid, "fps"], info_path, vid, "fps")
    return pd.DataFrame({
        "video_id": video_ids,
        "path": "",
        "duration": [duration[v] for v in video_ids],
        "fps": [fps[v] for v in video_ids],
        "subset": subset,
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
