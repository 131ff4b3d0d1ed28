"""The HDF5 feature store: layout, a crash-safe resumable writer, a lazy reader, shards.

Layout of ``features.h5`` (DESIGN.md, "Features"):

* root attrs: ``format`` ("tal-features/1"), ``backbone``, ``checkpoint_sha256``,
  ``fps`` (target decode rate), ``num_frames``, ``interval`` and ``stride`` (target
  frames), ``short_side`` (pixels), ``dim`` (feature size), ``dtype`` (of the stored
  features), ``config`` (the resolved config as YAML text). Any extra scalar attrs a
  caller passes are stored too; the extraction stage adds ``crop`` ("none" or
  "center"), ``weights``, ``depth`` and ``width``. ``IDENTIFYING_KEYS`` (all the
  named attrs but ``config``, plus ``crop`` when present) identify the extraction: a
  writer refuses to add to a file whose identifying attrs differ.
* ``/videos/<video_id>``: dataset ``features`` (N, dim) in ``dtype`` (float16 by
  default), dataset ``times`` (N,) float64 clip-centre seconds, attrs ``duration``
  (seconds), ``native_fps`` and ``complete`` (bool).

Crash safety (a SIGKILL at any moment loses at most the videos in progress)
---------------------------------------------------------------------------
HDF5 is not journaled: a process killed while it modifies a file can leave the
file unreadable, losing every video in it. So the writer never modifies the
main file in place:

1. A video in progress is written to its own small file
   ``<features.h5>.parts/<quoted id>.h5.tmp``. ``finish_video`` marks it complete,
   closes it, fsyncs it and renames it to ``<quoted id>.h5`` (an atomic rename).
   A ``.h5`` part therefore always holds one complete video.
2. ``close`` consolidates: it writes a new file ``<features.h5>.tmp-merge`` holding
   the complete videos of the old main file plus all parts, fsyncs it, atomically
   replaces the main file with it, and only then deletes the parts.
3. Opening a writer recovers from a kill at any point of 1-2: it deletes
   ``*.tmp`` parts (interrupted videos, redone by the caller) and a stale
   ``.tmp-merge``, deletes parts already present in the main file (a kill after
   the replace), and counts main-file videos plus parts as complete. A main-file
   group without ``complete=True`` (only possible in files written elsewhere) is
   not counted and is dropped at the next consolidation.

The main file is only ever replaced whole, so readers never see a half-written
file and need no HDF5 file locking: the reader opens with ``locking=False``,
which also avoids lock errors on network file systems and in DataLoader workers.
Writers to the same path exclude each other with a POSIX record lock (``fcntl.lockf``)
on ``<features.h5>.lock``, plus a per-process set for writers within one process. The
kernel releases the lock when the process dies (the lock file itself stays), and unlike
``flock`` the lock is not inherited by forked children: the DataLoader workers of a
killed extraction, which linger for a few seconds, must not block its rerun.
The cost of the scheme is one extra copy of the features at
``close`` (consolidation rewrites the main file).

Shards: under several processes each rank writes its own file (``shard_path``)
with its own writer, and ``merge_shards`` copies them into one file, again via a
temporary file and an atomic replace. ``assign_shards`` splits the videos.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import urllib.parse
from pathlib import Path

import h5py
import numpy as np
import yaml

FORMAT = "tal-features/1"
# Root attrs that identify an extraction; a store only ever holds features made with one setting.
IDENTIFYING_KEYS = ("format", "backbone", "checkpoint_sha256", "fps", "num_frames", "interval", "stride",
                    "short_side", "crop", "dim", "dtype")
FEATURE_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
PART_SUFFIX = ".h5"
PART_TMP_SUFFIX = ".h5.tmp"
# Lock files held by writers of this process (a POSIX record lock does not exclude its own process).
_LOCKED_IN_THIS_PROCESS: set[str] = set()


class FeatureStoreError(RuntimeError):
    """A feature file cannot be used as asked; the message names the file."""


class FeatureStoreMismatch(FeatureStoreError):
    """An existing store was written with different extraction settings."""


# ------------------------------------------------------------------ attrs


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _plain(value):
    """A numpy scalar read from HDF5 attrs as the Python value."""
    return value.item() if isinstance(value, np.generic) else value


def _positive_int(value, key: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"feature store attrs: {key!r} must be a positive integer, got {value!r}")
    return int(value)


def normalize_root_attrs(attrs: dict, dtype: str) -> dict:
    """Check the root attrs a writer is given and convert them to plain Python values.

    Required: backbone (str), checkpoint_sha256 (str), fps (float > 0), num_frames,
    interval, stride, short_side, dim (positive ints). Optional: format (default
    FORMAT), config (YAML text or a dict, dumped to YAML), extra str/int/float/bool values.
    """
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"feature store: dtype must be one of {sorted(FEATURE_DTYPES)}, got {dtype!r}")
    missing = [key for key in ("backbone", "checkpoint_sha256", "fps", "num_frames", "interval", "stride",
                               "short_side", "dim") if key not in attrs]
    if missing:
        raise ValueError(f"feature store attrs: missing {missing}")
    out = {}
    for key, value in attrs.items():
        if key in ("backbone", "checkpoint_sha256", "format"):
            if not isinstance(value, str):
                raise ValueError(f"feature store attrs: {key!r} must be a string, got {value!r}")
            out[key] = value
        elif key == "fps":
            fps = float(value)
            if not math.isfinite(fps) or fps <= 0:
                raise ValueError(f"feature store attrs: 'fps' must be finite and > 0, got {value!r}")
            out[key] = fps
        elif key in ("num_frames", "interval", "stride", "short_side", "dim"):
            out[key] = _positive_int(value, key)
        elif key == "config":
            out[key] = value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=False)
        elif key == "dtype":
            if value != dtype:
                raise ValueError(f"feature store attrs: 'dtype' {value!r} differs from the writer dtype "
                                 f"{dtype!r}")
        elif isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            out[key] = _plain(value)
        else:
            raise ValueError(f"feature store attrs: extra attr {key!r} must be a str/int/float/bool, "
                             f"got {value!r}")
    out.setdefault("format", FORMAT)
    out.setdefault("config", "")
    out["dtype"] = dtype
    return out


def _read_root_attrs(h5file: h5py.File) -> dict:
    """Root attrs as plain Python values (config left as YAML text)."""
    return {key: _plain(value) for key, value in h5file.attrs.items()}


def _write_root_attrs(h5file: h5py.File, attrs: dict) -> None:
    for key, value in attrs.items():
        h5file.attrs[key] = value


def _attr_differences(old: dict, new: dict) -> list[str]:
    """'key: old=... new=...' for every identifying key whose value differs."""
    lines = []
    for key in IDENTIFYING_KEYS:
        old_value, new_value = old.get(key, "<missing>"), new.get(key, "<missing>")
        if old_value != new_value:
            lines.append(f"{key}: old={old_value!r} new={new_value!r}")
    return lines


def _check_video_id(video_id) -> str:
    if not isinstance(video_id, str) or not video_id or "/" in video_id or video_id in (".", ".."):
        raise ValueError(f"feature store: video id must be a non-empty string without '/', got {video_id!r}")
    return video_id


# ------------------------------------------------------------------ file helpers


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _complete_video_ids(h5file: h5py.File) -> list[str]:
    videos = h5file.get("videos")
    if videos is None:
        return []
    return sorted(video_id for video_id, group in videos.items() if bool(group.attrs.get("complete", False)))


def _open_existing(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as error:
        raise FeatureStoreError(
            f"feature store {path} exists but cannot be opened by HDF5 ({error}); the writer only replaces "
            "it atomically, so it was damaged or written elsewhere; pass overwrite=True to start fresh"
        ) from error


def compatible_complete_ids(path: str | os.PathLike, attrs: dict, dtype: str = "float16") -> list[str]:
    """Complete videos of an existing feature file made with these settings (``[]`` when there is no file).

    Raises ``FeatureStoreMismatch`` naming what differs when the file's identifying attrs
    are not those that ``attrs`` and ``dtype`` would write (``FeatureStoreError`` when it is
    unreadable). Lets a process that writes a shard skip what the merged file already holds.
    """
    path = Path(path)
    if not path.exists():
        return []
    expected = normalize_root_attrs(attrs, dtype)
    with _open_existing(path) as h5file:
        differences = _attr_differences(_read_root_attrs(h5file), expected)
        if differences:
            raise FeatureStoreMismatch(f"feature store {path} was written with other extraction settings: "
                                       + "; ".join(differences))
        return _complete_video_ids(h5file)


# ------------------------------------------------------------------ writer


class _OpenVideo:
    """A video being written to its temporary part file."""

    def __init__(self, tmp_path: Path, h5file: h5py.File, num_clips: int):
        self.tmp_path = tmp_path
        self.h5file = h5file
        self.num_clips = num_clips
        self.written = np.zeros(num_clips, dtype=bool)  # which clip rows have been written


class FeatureWriter:
    """Writes ``features.h5`` video by video; resumable and safe against SIGKILL (see the module docstring).

    Usage::

        with FeatureWriter(path, attrs) as writer:
            done = set(writer.completed_video_ids())
            for each video not in done:
                writer.begin_video(video_id, duration_sec, native_fps, num_clips)
                writer.write_chunk(video_id, start_index, features, times_sec)  # repeatedly
                writer.finish_video(video_id)
        # leaving the block consolidates everything into ``path``.

    Args:
        path: the main HDF5 file.
        attrs: root attrs (see ``normalize_root_attrs``).
        dtype: stored feature dtype, "float16" (default), "float32" or "float64".
        overwrite: start fresh, deleting an existing file and parts, instead of resuming
            (and instead of raising ``FeatureStoreMismatch`` when the settings differ).
    """

    def __init__(self, path: str | os.PathLike, attrs: dict, dtype: str = "float16", overwrite: bool = False):
        self.path = Path(path)
        self.attrs = normalize_root_attrs(attrs, dtype)
        self.dtype = np.dtype(FEATURE_DTYPES[dtype])
        self.parts_dir = self.path.with_name(self.path.name + ".parts")
        self._merge_tmp_path = self.path.with_name(self.path.name + ".tmp-merge")
        self._in_progress: dict[str, _OpenVideo] = {}
        self._main_ids: set[str] = set()
        self._part_ids: set[str] = set()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_handle = self._acquire_lock()
        try:
            self._recover(overwrite)
        except BaseException:
            self._release_lock()
            raise

    # -------------------------------------------------- opening and recovery

    def _acquire_lock(self):
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_key = str(lock_path.resolve())
        if lock_key in _LOCKED_IN_THIS_PROCESS:
            raise FeatureStoreError(f"another writer is writing feature store {self.path} (in this process)")
        handle = open(lock_path, "a")
        try:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            if error.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise FeatureStoreError(f"another process is writing feature store {self.path} "
                                    f"(lock {lock_path} is held)") from error
        _LOCKED_IN_THIS_PROCESS.add(lock_key)
        self._lock_key = lock_key
        return handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing the descriptor releases the record lock
            self._lock_handle = None
            _LOCKED_IN_THIS_PROCESS.discard(self._lock_key)

    def _part_path(self, video_id: str, suffix: str = PART_SUFFIX) -> Path:
        return self.parts_dir / (urllib.parse.quote(video_id, safe="") + suffix)

    def _recover(self, overwrite: bool) -> None:
        self._merge_tmp_path.unlink(missing_ok=True)  # a consolidation killed before its replace
        if overwrite:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.parts_dir, ignore_errors=True)

        if self.path.exists():
            with _open_existing(self.path) as h5file:
                differences = _attr_differences(_read_root_attrs(h5file), self.attrs)
                if differences:
                    raise FeatureStoreMismatch(
                        f"feature store {self.path} was written with other extraction settings: "
                        + "; ".join(differences) + " (pass overwrite=True to replace it)")
                self._main_ids = set(_complete_video_ids(h5file))

        attrs_json = self.parts_dir / "attrs.json"
        if self.parts_dir.exists():
            for tmp_part in self.parts_dir.glob("*" + PART_TMP_SUFFIX):
                tmp_part.unlink()  # a video interrupted mid-write: redone
            part_paths = sorted(self.parts_dir.glob("*" + PART_SUFFIX))
            if attrs_json.exists():
                differences = _attr_differences(json.loads(attrs_json.read_text()), self.attrs)
                if differences:
                    raise FeatureStoreMismatch(
                        f"unfinished parts in {self.parts_dir} were written with other extraction settings: "
                        + "; ".join(differences) + " (pass overwrite=True to discard them)")
            elif part_paths:
                raise FeatureStoreError(f"{self.parts_dir} holds parts but no attrs.json; "
                                        "pass overwrite=True to discard them")
            for part_path in part_paths:
                video_id = urllib.parse.unquote(part_path.name[: -len(PART_SUFFIX)])
                if video_id in self._main_ids:
                    part_path.unlink()  # consolidated already; killed before the cleanup
                else:
                    self._part_ids.add(video_id)
        self.parts_dir.mkdir(exist_ok=True)
        if not attrs_json.exists():
            tmp_json = attrs_json.with_suffix(".json.tmp")
            tmp_json.write_text(json.dumps(self.attrs, indent=1))
            os.replace(tmp_json, attrs_json)

    def completed_video_ids(self) -> list[str]:
        """Videos already complete (in the main file or in finished parts), sorted."""
        return sorted(self._main_ids | self._part_ids)

    # -------------------------------------------------- writing one video

    def begin_video(self, video_id: str, duration: float, native_fps: float, num_clips: int) -> None:
        """Start (or restart) a video: a part file with preallocated ``features`` (num_clips, dim), ``times``.

        Args:
            duration: video duration in seconds (finite, >= 0).
            native_fps: the file's own frame rate (NaN when unknown).
            num_clips: rows to allocate (N of the clip grid).
        """
        self._check_open()
        video_id = _check_video_id(video_id)
        if video_id in self._main_ids or video_id in self._part_ids:
            raise FeatureStoreError(f"video {video_id!r} is already complete in feature store {self.path}")
        duration = float(duration)
        native_fps = float(native_fps)
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(f"feature store: video {video_id!r}: duration must be finite and >= 0, "
                             f"got {duration!r}")
        if not (math.isnan(native_fps) or (math.isfinite(native_fps) and native_fps > 0)):
            raise ValueError(f"feature store: video {video_id!r}: native_fps must be > 0 or NaN, "
                             f"got {native_fps!r}")
        if not _is_int(num_clips) or num_clips < 0:
            raise ValueError(f"feature store: video {video_id!r}: num_clips must be an integer >= 0, "
                             f"got {num_clips!r}")
        if video_id in self._in_progress:
            self.abort_video(video_id)

        tmp_path = self._part_path(video_id, PART_TMP_SUFFIX)
        h5file = h5py.File(tmp_path, "w", locking=False)
        group = h5file.create_group("videos").create_group(video_id)
        # NaN fill makes any row that was never written visible.
        group.create_dataset("features", shape=(int(num_clips), self.attrs["dim"]), dtype=self.dtype,
                             fillvalue=np.nan)
        group.create_dataset("times", shape=(int(num_clips),), dtype=np.float64, fillvalue=np.nan)
        group.attrs["duration"] = duration
        group.attrs["native_fps"] = native_fps
        group.attrs["complete"] = False
        self._in_progress[video_id] = _OpenVideo(tmp_path, h5file, int(num_clips))

    def write_chunk(self, video_id: str, start_index: int, features, times) -> None:
        """Write clip rows ``start_index .. start_index + n - 1``.

        Args:
            features: (n, dim) array of finite values (a numpy array; convert tensors with
                ``.float().cpu().numpy()``); cast to the store dtype.
            times: (n,) clip-centre seconds.
        """
        video = self._video_in_progress(video_id)
        features = np.asarray(features)
        times = np.asarray(times, dtype=np.float64)
        dim = self.attrs["dim"]
        if features.ndim != 2 or features.shape[1] != dim:
            raise ValueError(f"feature store: video {video_id!r}: features must have shape (n, {dim}), "
                             f"got {features.shape}")
        num_rows = features.shape[0]
        if times.shape != (num_rows,):
            raise ValueError(f"feature store: video {video_id!r}: times must have shape ({num_rows},), "
                             f"got {times.shape}")
        if not _is_int(start_index) or start_index < 0 or start_index + num_rows > video.num_clips:
            raise ValueError(f"feature store: video {video_id!r}: {num_rows} rows from {start_index!r} "
                             f"exceed the {video.num_clips} clip rows")
        with np.errstate(over="ignore"):  # values beyond the dtype's range become inf, rejected just below
            stored = features.astype(self.dtype)
        if not np.isfinite(stored).all() or not np.isfinite(times).all():
            raise ValueError(f"feature store: video {video_id!r}: non-finite features or times in rows "
                             f"{start_index}..{start_index + num_rows - 1} "
                             f"(or values beyond the {self.dtype} range)")
        group = video.h5file["videos"][video_id]
        group["features"][start_index:start_index + num_rows] = stored
        group["times"][start_index:start_index + num_rows] = times
        video.written[start_index:start_index + num_rows] = True

    def finish_video(self, video_id: str) -> None:
        """Mark the video complete and move its part into place atomically (it survives any later kill)."""
        video = self._video_in_progress(video_id)
        missing = np.flatnonzero(~video.written)
        if missing.size:
            raise FeatureStoreError(f"video {video_id!r}: {missing.size} of {video.num_clips} clip rows "
                                    f"never written (first {missing[0]}) in feature store {self.path}")
        video.h5file["videos"][video_id].attrs["complete"] = True
        video.h5file.close()
        _fsync_file(video.tmp_path)
        os.replace(video.tmp_path, self._part_path(video_id))
        _fsync_dir(self.parts_dir)
        del self._in_progress[video_id]
        self._part_ids.add(video_id)

    def abort_video(self, video_id: str) -> None:
        """Drop a video in progress (e.g. its decoding failed); nothing of it is kept."""
        video = self._video_in_progress(video_id)
        video.h5file.close()
        video.tmp_path.unlink(missing_ok=True)
        del self._in_progress[video_id]

    def _video_in_progress(self, video_id: str) -> _OpenVideo:
        self._check_open()
        if video_id not in self._in_progress:
            raise FeatureStoreError(f"video {video_id!r} was not begun (begin_video) in feature store "
                                    f"{self.path}")
        return self._in_progress[video_id]

    def _check_open(self) -> None:
        if self._closed:
            raise FeatureStoreError(f"feature writer for {self.path} is closed")

    # -------------------------------------------------- consolidation

    def close(self) -> None:
        """Abort videos still in progress, consolidate the parts into the main file, release the lock."""
        if self._closed:
            return
        try:
            for video_id in list(self._in_progress):
                self.abort_video(video_id)
            self._consolidate()
        finally:
            self._closed = True
            self._release_lock()

    def _consolidate(self) -> None:
        if not self._part_ids and self.path.exists():
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            return
        main_file = h5py.File(self.path, "r", locking=False) if self.path.exists() else None
        try:
            with h5py.File(self._merge_tmp_path, "w", locking=False) as out:
                _write_root_attrs(out, self.attrs)
                out_videos = out.create_group("videos")
                for video_id in sorted(self._main_ids | self._part_ids):
                    if video_id in self._part_ids:
                        with h5py.File(self._part_path(video_id), "r", locking=False) as part:
                            part.copy(part["videos"][video_id], out_videos, name=video_id)
                    else:
                        main_file.copy(main_file["videos"][video_id], out_videos, name=video_id)
        finally:
            if main_file is not None:
                main_file.close()
        _fsync_file(self._merge_tmp_path)
        os.replace(self._merge_tmp_path, self.path)
        _fsync_dir(self.path.parent)
        self._main_ids |= self._part_ids
        self._part_ids = set()
        shutil.rmtree(self.parts_dir, ignore_errors=True)

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
            return
        # On an error keep the finished parts for the next run and skip the (possibly long) consolidation.
        for video_id in list(self._in_progress):
            self.abort_video(video_id)
        self._closed = True
        self._release_lock()


# ------------------------------------------------------------------ reader


class FeatureStore:
    """Read-only access to a feature file; opens lazily, once per process (safe in DataLoader workers).

    ``video_ids`` lists complete videos only. ``get`` returns ``(features float32 (N, dim),
    times float64 (N,) clip-centre seconds)``. Pickling drops the open handle, and a
    process forked after the file was opened re-opens it on first use.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._video_ids: list[str] | None = None

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            if not self.path.exists():
                raise FileNotFoundError(f"feature store {self.path} does not exist")
            self._file = _open_existing(self.path)
            self._pid = os.getpid()
            self._video_ids = _complete_video_ids(self._file)
        return self._file

    @property
    def video_ids(self) -> list[str]:
        """Complete videos, sorted."""
        self._handle()
        return list(self._video_ids)

    @property
    def attrs(self) -> dict:
        """Root attrs as Python values, with ``config`` decoded from YAML into a dict."""
        attrs = _read_root_attrs(self._handle())
        attrs["config"] = yaml.safe_load(attrs.get("config") or "") or {}
        return attrs

    def _group(self, video_id: str) -> h5py.Group:
        h5file = self._handle()
        if video_id not in self._video_ids:
            present = isinstance(video_id, str) and f"videos/{video_id}" in h5file
            why = "incomplete" if present else "not present"
            raise KeyError(f"video {video_id!r} {why} in feature store {self.path} "
                           f"({len(self._video_ids)} complete videos)")
        return h5file["videos"][video_id]

    def get(self, video_id: str, start_index: int = 0, stop_index: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """``(features float32 (n, dim), times float64 (n,) s)`` of clips ``start_index .. stop_index - 1``.

        The whole video by default; a window reads only its rows (hour-long videos).
        """
        group = self._group(video_id)
        num_clips = group["times"].shape[0]
        stop_index = num_clips if stop_index is None else stop_index
        if not (_is_int(start_index) and _is_int(stop_index) and 0 <= start_index <= stop_index <= num_clips):
            raise IndexError(f"video {video_id!r} in feature store {self.path}: clip rows "
                             f"{start_index!r}..{stop_index!r} outside 0..{num_clips}")
        features = group["features"][start_index:stop_index].astype(np.float32)
        times = group["times"][start_index:stop_index].astype(np.float64)
        return features, times

    def video_attrs(self, video_id: str) -> dict:
        """``duration`` (s), ``native_fps``, ``complete`` and ``num_clips`` of one video."""
        group = self._group(video_id)
        attrs = {key: _plain(value) for key, value in group.attrs.items()}
        attrs["num_clips"] = int(group["times"].shape[0])
        return attrs

    def __contains__(self, video_id) -> bool:
        self._handle()
        return video_id in self._video_ids

    def __len__(self) -> int:
        self._handle()
        return len(self._video_ids)

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._pid = None
        self._video_ids = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


# ------------------------------------------------------------------ shards


def shard_path(features_h5: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Shard file of one rank: ``features.h5`` -> ``features.rank1-of-4.h5`` (unchanged for world_size 1)."""
    features_h5 = Path(features_h5)
    if not _is_int(world_size) or world_size < 1:
        raise ValueError(f"shard_path: world_size must be a positive integer, got {world_size!r}")
    if not _is_int(rank) or not 0 <= rank < world_size:
        raise ValueError(f"shard_path: rank must be in 0..{world_size - 1}, got {rank!r}")
    if world_size == 1:
        return features_h5
    return features_h5.with_name(f"{features_h5.stem}.rank{rank}-of-{world_size}{features_h5.suffix}")


def assign_shards(video_ids: list[str], durations, world_size: int) -> list[list[str]]:
    """Split videos over ranks, balanced by duration (greedy longest-processing-time).

    Videos are taken longest first (ties by id) and each goes to the rank with the least
    total duration so far (ties to the lowest rank). Each rank's list is in assignment
    order. Any non-negative cost works as ``durations`` (e.g. file sizes when durations
    are unknown).
    """
    video_ids = list(video_ids)
    durations = [float(duration) for duration in durations]
    if not _is_int(world_size) or world_size < 1:
        raise ValueError(f"assign_shards: world_size must be a positive integer, got {world_size!r}")
    if len(video_ids) != len(durations):
        raise ValueError(f"assign_shards: {len(video_ids)} video ids but {len(durations)} durations")
    if len(set(video_ids)) != len(video_ids):
        duplicates = sorted({video_id for video_id in video_ids if video_ids.count(video_id) > 1})
        raise ValueError(f"assign_shards: duplicate video ids {duplicates[:5]}")
    for video_id, duration in zip(video_ids, durations):
        if not math.isfinite(duration) or duration < 0:
            raise ValueError(f"assign_shards: video {video_id!r} has duration {duration!r}; "
                             "need finite values >= 0 (pass a cost proxy such as file size if unknown)")
    loads = [0.0] * world_size
    shards: list[list[str]] = [[] for _ in range(world_size)]
    for duration, video_id in sorted(zip(durations, video_ids), key=lambda pair: (-pair[0], pair[1])):
        rank = min(range(world_size), key=lambda index: (loads[index], index))
        shards[rank].append(video_id)
        loads[rank] += duration
    return shards


def _groups_equal(first: h5py.Group, second: h5py.Group) -> bool:
    # repr() so that a NaN native_fps compares equal to itself.
    first_attrs = {key: repr(np.asarray(value).tolist()) for key, value in first.attrs.items()}
    second_attrs = {key: repr(np.asarray(value).tolist()) for key, value in second.attrs.items()}
    return (first_attrs == second_attrs
            and first["features"].dtype == second["features"].dtype
            and np.array_equal(first["features"][()], second["features"][()], equal_nan=True)
            and np.array_equal(first["times"][()], second["times"][()], equal_nan=True))


def merge_shards(shard_paths: list[str | os.PathLike], out_path: str | os.PathLike) -> list[str]:
    """Copy the complete videos of per-rank shard files into one file, atomically.

    All shards must have the same identifying attrs (``FeatureStoreMismatch`` otherwise)
    and must have been closed by their writers (no pending parts). A video in several
    shards is an error unless the copies are identical. The root attrs (config
    included) are taken from the first shard. Returns the merged video ids, sorted.
    """
    shard_paths = [Path(path) for path in shard_paths]
    out_path = Path(out_path)
    if not shard_paths:
        raise ValueError("merge_shards: no shard files given")
    for path in shard_paths:
        if not path.exists():
            raise FileNotFoundError(f"merge_shards: shard {path} does not exist")
        parts_dir = path.with_name(path.name + ".parts")
        if parts_dir.exists() and any(parts_dir.glob("*" + PART_SUFFIX)):
            raise FeatureStoreError(f"merge_shards: shard {path} has unconsolidated parts in {parts_dir}; "
                                    "rerun that rank's extraction so that its writer closes")
    tmp_path = out_path.with_name(out_path.name + ".tmp-merge")
    shard_files = []
    try:
        for path in shard_paths:
            shard_files.append(_open_existing(path))
        first_attrs = _read_root_attrs(shard_files[0])
        owner: dict[str, int] = {}  # video id -> index of the shard it is copied from
        for index, shard in enumerate(shard_files):
            differences = _attr_differences(first_attrs, _read_root_attrs(shard))
            if differences:
                raise FeatureStoreMismatch(f"merge_shards: shard {shard_paths[index]} differs from "
                                           f"{shard_paths[0]}: " + "; ".join(differences))
            for video_id in _complete_video_ids(shard):
                if video_id in owner:
                    other = shard_files[owner[video_id]]
                    if not _groups_equal(other["videos"][video_id], shard["videos"][video_id]):
                        raise FeatureStoreError(f"merge_shards: video {video_id!r} differs between shards "
                                                f"{shard_paths[owner[video_id]]} and {shard_paths[index]}")
                else:
                    owner[video_id] = index
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(tmp_path, "w", locking=False) as out:
            _write_root_attrs(out, first_attrs)
            out_videos = out.create_group("videos")
            for video_id in sorted(owner):
                source = shard_files[owner[video_id]]
                source.copy(source["videos"][video_id], out_videos, name=video_id)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        for shard in shard_files:
            shard.close()
    _fsync_file(tmp_path)
    os.replace(tmp_path, out_path)
    _fsync_dir(out_path.parent)
    return sorted(owner)
