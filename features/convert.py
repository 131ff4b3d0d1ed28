"""Features from and to other toolkits: per-video arrays <-> ``features.h5``.

    python -m features.convert import FOLDER FEATURES_H5 --fps F --stride S --num-frames N [options]
    python -m features.convert import EXPORTED_FOLDER FEATURES_H5       # a folder `export` wrote
    python -m features.convert export FEATURES_H5 FOLDER

**import** reads one array per video from ``FOLDER`` (not its subfolders), the video id
being the file name without its extension:

* ``.npy`` (ActionFormer, OpenTAD, video_features), ``.npz`` (the array named ``--key``, or
  the only one, or ``feats``/``features``), ``.pt``/``.pth`` (``torch.load`` with
  ``weights_only=True``: a tensor or a dict of them) and ``.pkl``/``.pickle`` (an array, a
  tensor or a dict of them; a pickle runs code when loaded: import only pickles you trust).
* Each array is 2-D: ``(T, C)`` (``--layout TC``, the default: one row per clip, as ActionFormer
  and OpenTAD store them) or ``(C, T)`` (``--layout CT``). All videos must have the same C.
* Feature times (clip centres, seconds) lie on the clip grid of ``features.windows``: clip
  ``k`` is centred at ``(k * stride + (num_frames - 1) * interval / 2) / fps`` (``grid_times``),
  with the user's ``--fps`` (the frame rate the features were computed at), ``--stride``
  (frames between clips), ``--num-frames`` and ``--interval`` (frames per clip and between
  them; ``--interval`` 1 by default). ``--times FILE`` gives explicit times instead, a JSON
  object ``{video_id: [t0, t1, ...]}`` (finite, strictly increasing, one per row); the grid
  options are still recorded as the store's attrs. ActionFormer places a clip of
  ``num_frames`` consecutive frames at ``k * stride + num_frames / 2`` frames, half a frame
  later than this grid; pass ``--times`` where that matters.
* Video duration (seconds): from ``--durations FILE`` (a CSV with ``video_id`` and ``duration``
  columns, and optionally ``native_fps`` or ``fps``, as EK100's ``EPIC_100_video_info.csv``; or a
  JSON object ``{video_id: seconds}`` or ``{video_id: {"duration": s, "native_fps": f}}``,
  optionally under ``"database"`` as ActivityNet/HACS files have it), else estimated as the
  end of the last clip's last frame: ``last centre + ((num_frames - 1) * interval / 2 + 1) / fps``
  (``estimated_duration``). ``native_fps`` is NaN unless the durations file gives it.
* Root attrs: ``backbone`` = ``--backbone`` (default ``imported:<folder name>``),
  ``checkpoint_sha256`` = "" (no checkpoint of ours made them; the classify stage accepts ""),
  ``short_side`` = ``--short-side`` (default 1, meaning "unknown": the store requires a
  positive value), ``dim`` = C, the grid options; extra attrs ``imported_sha256`` (SHA-256
  over every video's id, dtype, shape and ``(T, C)`` bytes as read, in id order) and
  ``imported_layout``; ``config`` holds the import's settings. Features are stored in
  ``--dtype`` (float32 by default; float16 halves the file, as the extract stage stores them).

When ``FOLDER`` holds a ``features.json`` written by ``export``, everything comes from it
(attrs, dtype, times, durations, native frame rates, the list of videos), no option may be
given, and the store written is the exported one, bit for bit in its features, times,
root attrs and video attrs. Files the JSON does not list are ignored.

**export** writes ``FOLDER/<video_id>.npy``, ``(T, C)`` in the store's own dtype (exactly the
stored values), and ``FOLDER/features.json``: ``format`` (``EXPORT_FORMAT``), ``layout``
("TC"), ``dtype``, ``fps``, ``stride``, ``num_frames``, ``interval``, ``dim``, ``attrs`` (all
root attrs, ``config`` as its YAML text) and ``videos``: per video ``file``, ``num_clips``,
``duration`` (s), ``native_fps`` (null when unknown) and ``times`` (clip-centre seconds).

Errors: a file that cannot be loaded, is not a 2-D numeric array, is empty, has another C
than the first file, holds NaN or inf (or values beyond the float16 range), lacks its times
or duration, or a listed video without a file: one line naming the file (``ConvertError``;
the command prints it and exits 1). The output is written under a temporary name and
renamed once complete, so a failed import leaves no store behind (and an existing one in
place); an existing output is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import math
import pickle
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from formats.feature_writer import FeatureWriter
from formats.features import (
    FEATURE_DTYPES,
    FeatureStoreError,
    complete_video_ids,
    open_existing,
    read_root_attrs,
    sidecar,
)
from runstate import atomic

log = logging.getLogger(__name__)

EXPORT_FORMAT = "tal-features-export/1"
EXPORT_JSON = "features.json"
FEATURE_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".pkl", ".pickle")
DICT_KEYS = ("feats", "features")  # keys tried in a dict of arrays when --key is not given
LAYOUTS = ("TC", "CT")
WRITE_ROWS = 4096  # rows per write_chunk: bounds the float cast of one write


class ConvertError(ValueError):
    """An input cannot be converted; the one-line message names the file."""


@dataclass(frozen=True)
class ImportSettings:
    """How to read a folder of community features (see the module docstring).

    Attributes:
        fps: frames per second of the frame timeline the features were computed on.
        stride: frames between consecutive clips (features).
        num_frames: frames per clip.
        interval: frames between a clip's consecutive frames.
        layout: "TC" (rows are clips) or "CT".
        dtype: stored feature dtype ("float16", "float32", "float64").
        key: the array's name inside a dict-like file ("" = the only one, or feats/features).
        backbone: the store's ``backbone`` attr ("" = ``imported:<folder name>``).
        short_side: the store's ``short_side`` attr (pixels; 1 = unknown).
        times_json: JSON of explicit per-video times ("" = the clip grid).
        durations_file: CSV or JSON of per-video durations ("" = estimated from the times).
    """

    fps: float
    stride: int
    num_frames: int
    interval: int = 1
    layout: str = "TC"
    dtype: str = "float32"
    key: str = ""
    backbone: str = ""
    short_side: int = 1
    times_json: str = ""
    durations_file: str = ""


@dataclass(frozen=True)
class VideoMeta:
    """One video's timeline: clip-centre times (N,) seconds (None = the grid), duration (s), native fps."""

    times: np.ndarray | None = None
    duration: float | None = None
    native_fps: float = math.nan


# ------------------------------------------------------------------ the clip grid


def grid_times(num_clips: int, fps: float, num_frames: int, interval: int, stride: int) -> np.ndarray:
    """``(num_clips,)`` float64 clip-centre seconds: clip ``k`` at ``(k*stride + (num_frames-1)*interval/2) / fps``.

    The same expression, in the same order of operations, as ``features.windows.clip_grid``,
    so that the times equal those of our own extraction bit for bit.
    """
    clip_starts = np.arange(num_clips, dtype=np.int64) * stride  # (N,) frames
    return (clip_starts + (num_frames - 1) * interval / 2.0) / float(fps)


def estimated_duration(times: np.ndarray, fps: float, num_frames: int, interval: int) -> float:
    """Seconds up to the end of the last clip's last frame: last centre + half the clip's span + one frame."""
    return float(times[-1]) + ((num_frames - 1) * interval / 2.0 + 1.0) / float(fps)


# ------------------------------------------------------------------ reading one array


def _pick(value, path: Path, key: str):
    """The array inside a dict-like value: ``key``, else the only entry, else feats/features."""
    if not hasattr(value, "keys"):
        return value
    keys = list(value.keys())
    if key:
        if key not in keys:
            raise ConvertError(f"{path}: no array named {key!r} (it holds {keys})")
        return value[key]
    if len(keys) == 1:
        return value[keys[0]]
    for name in DICT_KEYS:
        if name in keys:
            return value[name]
    raise ConvertError(f"{path}: holds several arrays {keys}; say which with --key")


def _as_numpy(value, path: Path) -> np.ndarray:
    if type(value).__module__.startswith("torch"):
        import torch  # only .pt/.pkl files holding tensors need it

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            # numpy has no bfloat16: widen it (exactly) to float32
            value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if not isinstance(value, np.ndarray):
        raise ConvertError(f"{path}: holds a {type(value).__name__}, not an array or tensor")
    if value.dtype.kind not in "fiu":
        raise ConvertError(f"{path}: array of dtype {value.dtype}, not a real number type")
    return value


def load_array(path: Path, key: str = "") -> np.ndarray:
    """The feature array stored in ``path`` (any of ``FEATURE_SUFFIXES``), as numpy, unchanged."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            value = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                value = _pick(archive, path, key)
        elif suffix in (".pt", ".pth"):
            import torch

            value = _pick(torch.load(path, map_location="cpu", weights_only=True), path, key)
        else:
            with open(path, "rb") as handle:
                value = _pick(pickle.load(handle), path, key)
    except ConvertError:
        raise
    # Loaders fail in their own ways on a damaged or foreign file (ValueError, EOFError, UnpicklingError,
    # OSError, zipfile errors, torch's RuntimeError): every one is this file's one-line error.
    except Exception as error:  # noqa: BLE001
        message = (str(error).strip().splitlines() or [""])[0][:200]
        raise ConvertError(f"{path}: cannot load it ({type(error).__name__}: {message})") from None
    return _as_numpy(value, path)


def checked_features(array: np.ndarray, path: Path, layout: str, dim: int | None) -> np.ndarray:
    """``array`` as ``(T, C)``: 2-D, not empty, finite, with ``C == dim`` when ``dim`` is given."""
    if array.ndim != 2:
        raise ConvertError(f"{path}: features must be a 2-D array ({layout[0]}, {layout[1]}), "
                           f"got shape {array.shape}")
    features = array if layout == "TC" else array.T  # (C, T) -> (T, C)
    if features.size == 0:
        raise ConvertError(f"{path}: empty array, shape {array.shape} ({layout})")
    if dim is not None and features.shape[1] != dim:
        raise ConvertError(f"{path}: feature dim {features.shape[1]} (shape {array.shape}, layout {layout}), "
                           f"the other files have {dim}")
    if features.dtype.kind == "f":
        bad = ~np.isfinite(features)
        if bad.any():
            row, column = (int(index[0]) for index in np.nonzero(bad))
            raise ConvertError(f"{path}: {int(bad.sum())} NaN or inf values (first at clip {row}, channel {column})")
    return np.ascontiguousarray(features)


# ------------------------------------------------------------------ side files (times, durations)


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConvertError(f"{what} {path}: cannot read it as JSON ({error})") from None


def read_times(path: Path) -> dict[str, np.ndarray]:
    """``{video_id: (N,) float64 seconds}`` from a JSON object of lists; finite and strictly increasing."""
    data = _read_json(path, "times file")
    if not isinstance(data, dict):
        raise ConvertError(f"times file {path}: must be a JSON object {{video_id: [seconds, ...]}}")
    times = {}
    for video_id, values in data.items():
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise ConvertError(f"times file {path}: video {video_id!r}: not a list of numbers") from None
        if array.ndim != 1 or array.size == 0 or not np.isfinite(array).all() or (np.diff(array) <= 0).any():
            raise ConvertError(f"times file {path}: video {video_id!r}: times must be a non-empty list of "
                               "finite, strictly increasing seconds")
        times[str(video_id)] = array
    return times


def _duration_value(value, path: Path, video_id: str) -> float:
    try:
        duration = float(value)
    except (TypeError, ValueError):
        duration = math.nan
    if not math.isfinite(duration) or duration <= 0:
        raise ConvertError(f"durations file {path}: video {video_id!r}: duration {value!r} is not a number > 0")
    return duration


def _fps_value(value) -> float:
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return math.nan
    return fps if math.isfinite(fps) and fps > 0 else math.nan


def read_durations(path: Path) -> dict[str, tuple[float, float]]:
    """``{video_id: (duration s, native fps or NaN)}`` from a CSV or JSON file (module docstring)."""
    path = Path(path)
    durations = {}
    if path.suffix.lower() == ".json":
        data = _read_json(path, "durations file")
        if isinstance(data, dict) and isinstance(data.get("database"), dict):
            data = data["database"]  # ActivityNet / HACS annotation files
        if not isinstance(data, dict):
            raise ConvertError(f"durations file {path}: must be a JSON object {{video_id: seconds}}")
        for video_id, value in data.items():
            entry = value if isinstance(value, dict) else {"duration": value}
            fps = entry.get("native_fps", entry.get("fps"))
            durations[str(video_id)] = (_duration_value(entry.get("duration"), path, video_id), _fps_value(fps))
        return durations
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConvertError(f"durations file {path}: cannot read it as CSV ({error})") from None
    if not rows or not {"video_id", "duration"} <= set(rows[0]):
        raise ConvertError(f"durations file {path}: needs a header with video_id and duration columns")
    for row in rows:
        fps = row.get("native_fps", row.get("fps"))
        durations[row["video_id"]] = (_duration_value(row["duration"], path, row["video_id"]), _fps_value(fps))
    return durations


# ------------------------------------------------------------------ import


def feature_files(folder: Path) -> dict[str, Path]:
    """``{video_id: file}`` of the feature files in ``folder``; two files of one id are an error."""
    if not folder.is_dir():
        raise ConvertError(f"{folder}: not a folder of feature files")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in FEATURE_SUFFIXES:
            video_id = path.name[: -len(path.suffix)]
            if video_id in files:
                raise ConvertError(f"{path}: video {video_id!r} also has {files[video_id]}")
            files[video_id] = path
    return files


def _exported_plan(folder: Path, files: dict[str, Path]):
    """From an export's ``features.json``: (attrs, dtype, layout, {video_id: (file, VideoMeta)})."""
    meta_path = folder / EXPORT_JSON
    data = _read_json(meta_path, "export file")
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise ConvertError(f"{meta_path}: not a features.json written by export (format {EXPORT_FORMAT}); "
                           "move it away to import the folder with --fps/--stride/--num-frames")
    plan = {}
    try:
        for video_id, entry in data["videos"].items():
            native_fps = math.nan if entry["native_fps"] is None else float(entry["native_fps"])
            plan[video_id] = (folder / entry["file"], VideoMeta(np.asarray(entry["times"], dtype=np.float64),
                                                                float(entry["duration"]), native_fps))
        attrs, dtype, layout = dict(data["attrs"]), str(data["dtype"]), str(data["layout"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ConvertError(f"{meta_path}: malformed ({type(error).__name__}: {error})") from None
    for video_id, (path, _) in plan.items():
        if not path.is_file():
            raise ConvertError(f"{path}: missing: {meta_path} lists video {video_id!r}")
    ignored = sorted(set(files) - set(plan))
    if ignored:
        log.info("convert: %d feature files in %s are not listed in %s; ignored (e.g. %s)", len(ignored), folder,
                 meta_path, files[ignored[0]].name)
    return attrs, dtype, layout, plan


def _settings_plan(folder: Path, files: dict[str, Path], settings: ImportSettings):
    """From the options: (attrs without dim, dtype, layout, {video_id: (file, VideoMeta)})."""
    if settings.layout not in LAYOUTS:
        raise ConvertError(f"--layout must be one of {list(LAYOUTS)}, got {settings.layout!r}")
    if settings.dtype not in FEATURE_DTYPES:
        raise ConvertError(f"--dtype must be one of {sorted(FEATURE_DTYPES)}, got {settings.dtype!r}")
    if not (math.isfinite(settings.fps) and settings.fps > 0):
        raise ConvertError(f"--fps must be a number > 0, got {settings.fps}")
    for name in ("stride", "num_frames", "interval", "short_side"):
        if getattr(settings, name) < 1:
            raise ConvertError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(settings, name)}")
    times = read_times(Path(settings.times_json)) if settings.times_json else {}
    durations = read_durations(Path(settings.durations_file)) if settings.durations_file else {}
    listed = sorted(set(times) - set(files))
    if listed:
        raise ConvertError(f"{folder / (listed[0] + '.npy')}: missing: {settings.times_json} lists video "
                           f"{listed[0]!r} (and {len(listed) - 1} more) but {folder} has no feature file for it")
    plan = {}
    for video_id, path in files.items():
        if settings.times_json and video_id not in times:
            raise ConvertError(f"{path}: no times for video {video_id!r} in {settings.times_json}")
        if settings.durations_file and video_id not in durations:
            raise ConvertError(f"{path}: no duration for video {video_id!r} in {settings.durations_file}")
        duration, native_fps = durations.get(video_id, (None, math.nan))
        plan[video_id] = (path, VideoMeta(times.get(video_id), duration, native_fps))
    attrs = dict(backbone=settings.backbone or f"imported:{folder.resolve().name}", checkpoint_sha256="",
                 fps=float(settings.fps), num_frames=settings.num_frames, interval=settings.interval,
                 stride=settings.stride, short_side=settings.short_side, imported_layout=settings.layout,
                 config={"import": {**asdict(settings), "folder": str(folder.resolve())}})
    return attrs, settings.dtype, settings.layout, plan


def _stored(features: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    with np.errstate(over="ignore"):  # values beyond the dtype's range become inf, refused just below
        stored = features.astype(FEATURE_DTYPES[dtype])
    if not np.isfinite(stored).all():
        largest = float(np.abs(features.astype(np.float64)).max())
        raise ConvertError(f"{path}: values up to {largest:.6g} lie beyond the {dtype} range; import with "
                           "--dtype float32")
    return stored


def _digest_update(digest, video_id: str, features: np.ndarray) -> None:
    digest.update(f"{video_id}|{features.dtype.str}|{list(features.shape)}|".encode())
    digest.update(features.tobytes())


def import_features(folder: str | Path, out_h5: str | Path, settings: ImportSettings | None = None,
                    overwrite: bool = False) -> list[str]:
    """Write ``out_h5`` from the feature files of ``folder`` (module docstring); returns the video ids.

    ``settings`` None means ``folder`` holds an export's ``features.json`` (which is then required).
    Raises ``ConvertError`` (one line naming the file) on bad input; nothing is written then.
    """
    folder, out_h5 = Path(folder), Path(out_h5)
    files = feature_files(folder)
    exported = (folder / EXPORT_JSON).is_file()
    if exported and settings is not None:
        raise ConvertError(f"{folder / EXPORT_JSON} holds the settings of this folder (an export); import it "
                           "without --fps/--stride/--num-frames/--interval/--layout/--times/--durations/--dtype/"
                           "--key/--backbone/--short-side")
    if not exported and settings is None:
        raise ConvertError(f"{folder}: no {EXPORT_JSON}; give --fps, --stride and --num-frames (see --help)")
    if not files and not exported:
        raise ConvertError(f"{folder}: no feature files ({' '.join(FEATURE_SUFFIXES)})")
    if out_h5.exists() and not overwrite:
        raise ConvertError(f"{out_h5} exists; pass --overwrite to replace it")
    if exported:
        attrs, dtype, layout, plan = _exported_plan(folder, files)
    else:
        attrs, dtype, layout, plan = _settings_plan(folder, files, settings)

    # Read everything once first: the dim and sha256 go into the root attrs, which the writer takes at once.
    digest = hashlib.sha256()
    dim, first = None, None
    for video_id in sorted(plan):
        path, meta = plan[video_id]
        features = checked_features(load_array(path, "" if exported else settings.key), path, layout, dim)
        if dim is None:
            dim, first = features.shape[1], path
        _digest_update(digest, video_id, features)
        _check_times(meta, len(features), path)
    if exported:
        if dim != attrs["dim"]:
            raise ConvertError(f"{first}: feature dim {dim}, {folder / EXPORT_JSON} says {attrs['dim']}")
    else:
        attrs.update(dim=dim, imported_sha256=digest.hexdigest())

    with atomic.atomic_output(out_h5) as staging:
        try:
            with FeatureWriter(staging, attrs, dtype=dtype, overwrite=True) as writer:
                for video_id in sorted(plan):
                    _write_video(writer, video_id, *plan[video_id], attrs, dtype, layout,
                                 "" if exported else settings.key)
        except ConvertError:
            raise
        except (FeatureStoreError, ValueError) as error:  # the writer refused the root attrs: the output's error
            raise ConvertError(f"{out_h5}: {error}") from None
        finally:  # the staging file's writer sidecars: its lock file, and the parts of a failed import
            sidecar(staging, "lock").unlink(missing_ok=True)
            shutil.rmtree(sidecar(staging, "parts"), ignore_errors=True)
    return sorted(plan)


def _check_times(meta: VideoMeta, num_clips: int, path: Path) -> None:
    if meta.times is not None and len(meta.times) != num_clips:
        raise ConvertError(f"{path}: {num_clips} feature rows but {len(meta.times)} times for it")


def _write_video(writer: FeatureWriter, video_id: str, path: Path, meta: VideoMeta, attrs: dict, dtype: str,
                 layout: str, key: str) -> None:
    features = checked_features(load_array(path, key), path, layout, attrs["dim"])  # (T, C)
    stored = _stored(features, dtype, path)
    times = meta.times if meta.times is not None else grid_times(
        len(stored), attrs["fps"], attrs["num_frames"], attrs["interval"], attrs["stride"])
    duration = meta.duration if meta.duration is not None else estimated_duration(
        times, attrs["fps"], attrs["num_frames"], attrs["interval"])
    try:
        writer.begin_video(video_id, duration, meta.native_fps, len(stored))
        for start in range(0, len(stored), WRITE_ROWS):
            writer.write_chunk(video_id, start, stored[start:start + WRITE_ROWS], times[start:start + WRITE_ROWS])
        writer.finish_video(video_id)
    except (ValueError, FeatureStoreError) as error:  # the writer's own checks (the id, say): this file's error
        raise ConvertError(f"{path}: {error}") from None


# ------------------------------------------------------------------ export


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an unknown native frame rate is written as null."""
    return None if math.isnan(value) else value


def export_features(features_h5: str | Path, out_folder: str | Path, overwrite: bool = False) -> list[str]:
    """Write one ``.npy`` per video and ``features.json`` (module docstring); returns the video ids."""
    features_h5, out_folder = Path(features_h5), Path(out_folder)
    if not features_h5.is_file():
        raise ConvertError(f"{features_h5}: no such feature store")
    if (out_folder / EXPORT_JSON).exists() and not overwrite:
        raise ConvertError(f"{out_folder / EXPORT_JSON} exists; pass --overwrite to replace the export")
    atomic.make_dirs(out_folder)
    try:
        h5file = open_existing(features_h5)
    except FeatureStoreError as error:
        raise ConvertError(str(error)) from None
    with h5file:
        attrs = read_root_attrs(h5file)  # config stays its YAML text: exported as it is
        missing = [key for key in ("dtype", "fps", "stride", "num_frames", "interval", "dim") if key not in attrs]
        if missing:
            raise ConvertError(f"{features_h5}: not a feature store of this toolkit (no root attrs {missing})")
        videos = {}
        for video_id in complete_video_ids(h5file):
            group = h5file["videos"][video_id]
            features = group["features"][()]  # (N, dim) in the stored dtype, exactly
            buffer = io.BytesIO()
            np.save(buffer, features, allow_pickle=False)
            atomic.write_bytes(out_folder / f"{video_id}.npy", buffer.getvalue())
            videos[video_id] = {
                "file": f"{video_id}.npy",
                "num_clips": int(features.shape[0]),
                "duration": float(group.attrs["duration"]),
                "native_fps": _json_number(float(group.attrs["native_fps"])),
                "times": group["times"][()].tolist(),  # float64 -> JSON: repr round-trips exactly
            }
    export = {"format": EXPORT_FORMAT, "layout": "TC", "dtype": attrs["dtype"], "fps": attrs["fps"],
              "stride": attrs["stride"], "num_frames": attrs["num_frames"], "interval": attrs["interval"],
              "dim": attrs["dim"], "attrs": attrs, "videos": videos}
    atomic.write_text(out_folder / EXPORT_JSON, json.dumps(export, indent=1, allow_nan=False))
    return sorted(videos)


# ------------------------------------------------------------------ command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m features.convert", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="a folder of per-video arrays -> features.h5")
    importer.add_argument("folder", help="folder of <video_id>.npy/.npz/.pt/.pth/.pkl files")
    importer.add_argument("features_h5", help="the feature store to write")
    importer.add_argument("--fps", type=float, help="frames per second the features were computed at")
    importer.add_argument("--stride", type=int, help="frames between consecutive features (clips)")
    importer.add_argument("--num-frames", type=int, help="frames per clip")
    importer.add_argument("--interval", type=int, help="frames between a clip's frames (default 1)")
    importer.add_argument("--layout", choices=LAYOUTS, help="array layout: TC (default, rows = clips) or CT")
    importer.add_argument("--times", help="JSON {video_id: [clip-centre seconds]} instead of the clip grid")
    importer.add_argument("--durations", help="CSV (video_id,duration[,native_fps|fps]) or JSON of durations (s)")
    importer.add_argument("--dtype", choices=sorted(FEATURE_DTYPES), help="stored dtype (default float32)")
    importer.add_argument("--key", help="array name inside .npz/.pt/.pkl dicts")
    importer.add_argument("--backbone", help="the store's backbone attr (default imported:<folder name>)")
    importer.add_argument("--short-side", type=int, help="frame short side the features saw (default 1: unknown)")
    importer.add_argument("--overwrite", action="store_true", help="replace an existing features.h5")
    exporter = commands.add_parser("export", help="features.h5 -> <video_id>.npy (T, C) + features.json")
    exporter.add_argument("features_h5")
    exporter.add_argument("folder")
    exporter.add_argument("--overwrite", action="store_true", help="replace an existing export in the folder")
    return parser


_SETTING_OPTIONS = {"fps": "fps", "stride": "stride", "num_frames": "num_frames", "interval": "interval",
                    "layout": "layout", "times": "times_json", "durations": "durations_file", "dtype": "dtype",
                    "key": "key", "backbone": "backbone", "short_side": "short_side"}  # option -> field


def _import_settings(args: argparse.Namespace) -> ImportSettings | None:
    """The options as ``ImportSettings``; None when none is given (an exported folder)."""
    given = {field: getattr(args, option) for option, field in _SETTING_OPTIONS.items()
             if getattr(args, option) is not None}
    if not given:
        return None
    missing = [f"--{name.replace('_', '-')}" for name in ("fps", "stride", "num_frames") if name not in given]
    if missing and not (Path(args.folder) / EXPORT_JSON).is_file():
        raise ConvertError(f"import {args.folder}: also give {' '.join(missing)}")
    return ImportSettings(**{"fps": math.nan, "stride": 0, "num_frames": 0, **given})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "import":
            video_ids = import_features(args.folder, args.features_h5, _import_settings(args), args.overwrite)
            print(f"convert: {len(video_ids)} videos from {args.folder} -> {args.features_h5}")
        else:
            video_ids = export_features(args.features_h5, args.folder, args.overwrite)
            print(f"convert: {len(video_ids)} videos from {args.features_h5} -> {args.folder} "
                  f"(<video_id>.npy (T, C) + {EXPORT_JSON})")
    except (ConvertError, OSError) as error:
        print(f"convert: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
