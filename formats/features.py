"""The HDF5 feature store: layout, a crash-safe resumable writer, a lazy reader, shards.

Layout of ``features.h5`` (DESIGN.md, "Features"):

* root attrs: ``format`` ("tal-features/1"), ``backbone``, ``checkpoint_sha256``,
  ``fps`` (target decode rate), ``num_frames``, ``interval`` and ``stride`` (target
  frames), ``short_side`` (pixels), ``dim`` (feature size), ``dtype`` (of the stored
  features), ``config`` (the resolved config as YAML text). Any extra scalar attrs a
  caller passes are stored too; the extraction stage adds ``crop`` ("none" or
  "center"), ``weights``, ``depth``, ``width`` and ``input_mean`` / ``input_std`` (the
  frame statistics, 3 floats each). ``IDENTIFYING_KEYS`` (all the named attrs but
  ``config``, plus ``crop`` and the statistics when present) identify the extraction: a
  writer refuses to add to a file whose identifying attrs differ.
* ``/videos/<video_id>``: dataset ``features`` (N, dim) in ``dtype`` (float16 by
  default), dataset ``times`` (N,) float64 clip-centre seconds, attrs ``duration``
  (seconds), ``native_fps`` and ``complete`` (bool).

Files beside ``features.h5`` (named here, by ``sidecar``): ``features.h5.parts/`` (videos
written but not yet consolidated, see ``formats.feature_writer``), ``features.h5.lock``
(held by the one writer), shard files ``features.rank<i>-of-<N>.h5`` with their ``.done``
marks (``formats.feature_shards``).

The main file is only ever replaced whole (``runstate.atomic``), so readers never see a
half-written file and need no HDF5 file locking: the reader opens with ``locking=False``,
which also avoids lock errors on network file systems and in DataLoader workers.
``check_store`` is the completeness check of a finished extraction: the file opens, has
the format's root attrs, and every video group is marked complete.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import h5py
import numpy as np
import yaml

FORMAT = "tal-features/1"
# Root attrs that identify an extraction; a store only ever holds features made with one setting.
IDENTIFYING_KEYS = ("format", "backbone", "checkpoint_sha256", "fps", "num_frames", "interval", "stride",
                    "short_side", "crop", "dim", "dtype", "input_mean", "input_std")
VECTOR_KEYS = ("input_mean", "input_std")  # per-channel frame statistics: lists of 3 finite floats
FEATURE_DTYPES = {"float16": np.float16, "float32": np.float32, "float64": np.float64}
# Sidecar files and folders beside a store: name -> suffix appended to the store's file name.
SIDECARS = {"parts": ".parts", "lock": ".lock", "legacy_merge_tmp": ".tmp-merge", "damaged": ".damaged"}


def sidecar(path: str | os.PathLike, kind: str) -> Path:
    """``features.h5`` -> ``features.h5.parts`` / ``.lock`` / ``.damaged`` (see ``SIDECARS``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECARS[kind])


class FeatureStoreError(RuntimeError):
    """A feature file cannot be used as asked; the message names the file."""


class FeatureStoreMismatch(FeatureStoreError):
    """An existing store was written with different extraction settings."""


# ------------------------------------------------------------------ attrs


def is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def plain_value(value):
    """A numpy scalar (or vector, as a list) read from HDF5 attrs as the Python value."""
    if isinstance(value, np.ndarray):
        return [item.item() if isinstance(item, np.generic) else item for item in value]
    return value.item() if isinstance(value, np.generic) else value


def _positive_int(value, key: str) -> int:
    if not is_int(value) or value < 1:
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
        elif key in VECTOR_KEYS:
            vector = [float(item) for item in value] if isinstance(value, (list, tuple, np.ndarray)) else []
            if len(vector) != 3 or not all(math.isfinite(item) for item in vector):
                raise ValueError(f"feature store attrs: {key!r} must be 3 finite numbers, got {value!r}")
            out[key] = vector
        elif key == "config":
            out[key] = value if isinstance(value, str) else yaml.safe_dump(value, sort_keys=False)
        elif key == "dtype":
            if value != dtype:
                raise ValueError(f"feature store attrs: 'dtype' {value!r} differs from the writer dtype "
                                 f"{dtype!r}")
        elif isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            out[key] = plain_value(value)
        else:
            raise ValueError(f"feature store attrs: extra attr {key!r} must be a str/int/float/bool, "
                             f"got {value!r}")
    out.setdefault("format", FORMAT)
    out.setdefault("config", "")
    out["dtype"] = dtype
    return out


def read_root_attrs(h5file: h5py.File) -> dict:
    """Root attrs as plain Python values (config left as YAML text)."""
    return {key: plain_value(value) for key, value in h5file.attrs.items()}


def write_root_attrs(h5file: h5py.File, attrs: dict) -> None:
    for key, value in attrs.items():
        h5file.attrs[key] = value


def attr_differences(old: dict, new: dict) -> list[str]:
    """'key: old=... new=...' for every identifying key whose value differs."""
    lines = []
    for key in IDENTIFYING_KEYS:
        old_value, new_value = old.get(key, "<missing>"), new.get(key, "<missing>")
        if old_value != new_value:
            lines.append(f"{key}: old={old_value!r} new={new_value!r}")
    return lines


def check_video_id(video_id) -> str:
    if not isinstance(video_id, str) or not video_id or "/" in video_id or video_id in (".", ".."):
        raise ValueError(f"feature store: video id must be a non-empty string without '/', got {video_id!r}")
    return video_id


# ------------------------------------------------------------------ file helpers


def complete_video_ids(h5file: h5py.File) -> list[str]:
    videos = h5file.get("videos")
    if videos is None:
        return []
    return sorted(video_id for video_id, group in videos.items() if bool(group.attrs.get("complete", False)))


def open_existing(path: Path) -> h5py.File:
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
    with open_existing(path) as h5file:
        differences = attr_differences(read_root_attrs(h5file), expected)
        if differences:
            raise FeatureStoreMismatch(f"feature store {path} was written with other extraction settings: "
                                       + "; ".join(differences))
        return complete_video_ids(h5file)




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
            self._file = open_existing(self.path)
            self._pid = os.getpid()
            self._video_ids = complete_video_ids(self._file)
        return self._file

    @property
    def video_ids(self) -> list[str]:
        """Complete videos, sorted."""
        self._handle()
        return list(self._video_ids)

    @property
    def attrs(self) -> dict:
        """Root attrs as Python values, with ``config`` decoded from YAML into a dict."""
        attrs = read_root_attrs(self._handle())
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
        if not (is_int(start_index) and is_int(stop_index) and 0 <= start_index <= stop_index <= num_clips):
            raise IndexError(f"video {video_id!r} in feature store {self.path}: clip rows "
                             f"{start_index!r}..{stop_index!r} outside 0..{num_clips}")
        features = group["features"][start_index:stop_index].astype(np.float32)
        times = group["times"][start_index:stop_index].astype(np.float64)
        return features, times

    def video_attrs(self, video_id: str) -> dict:
        """``duration`` (s), ``native_fps``, ``complete`` and ``num_clips`` of one video."""
        group = self._group(video_id)
        attrs = {key: plain_value(value) for key, value in group.attrs.items()}
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


def check_store(path: str | os.PathLike) -> str:
    """``""`` when ``path`` is a whole feature store (opens, has the format's attrs, every video group is
    complete), else one line saying what is wrong. The completion stamp's check for ``features.h5``."""
    path = Path(path)
    try:
        with h5py.File(path, "r", locking=False) as h5file:
            attrs = read_root_attrs(h5file)
            if attrs.get("format") != FORMAT:
                return f"not a feature store of format {FORMAT} (format {attrs.get('format')!r})"
            videos = h5file.get("videos")
            if videos is None:
                return "no /videos group"
            for video_id, group in videos.items():
                if not bool(group.attrs.get("complete", False)):
                    return f"video {video_id!r} is not marked complete"
                if group["features"].shape[0] != group["times"].shape[0]:
                    return f"video {video_id!r} has {group['features'].shape[0]} feature rows and " \
                           f"{group['times'].shape[0]} times"
    except (OSError, KeyError, ValueError) as error:
        return f"cannot be read by HDF5 ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return ""
