"""The crash-safe, resumable writer of ``features.h5`` (layout in ``formats.features``).

Crash safety (a SIGKILL at any moment loses at most the videos in progress)
---------------------------------------------------------------------------
HDF5 is not journaled: a process killed while it modifies a file can leave the
file unreadable, losing every video in it. So the writer never modifies the
main file in place:

1. A video in progress is written to its own small file, a ``runstate.atomic.AtomicFile``
   temporary beside its part ``<features.h5>.parts/<quoted id>.h5``. ``finish_video`` marks
   it complete, closes it and commits it (fsync, rename, fsync of the folder). A ``.h5``
   part therefore always holds one complete video.
2. ``close`` consolidates: it writes a new temporary file holding the complete videos
   of the old main file plus all parts, and commits it over the main file; only then
   are the parts deleted.
3. Opening a writer recovers from a kill at any point of 1-2: it deletes temporary
   files (interrupted videos, redone by the caller; an interrupted consolidation),
   deletes parts already present in the main file (a kill after the replace), drops
   parts that no longer open (damaged on disk), and counts main-file videos plus parts
   as complete. A main-file group without ``complete=True`` (only possible in files
   written elsewhere) is not counted and is dropped at the next consolidation.

A main file that HDF5 cannot open raises ``FeatureStoreError`` unless the writer is
told ``recover_damaged=True`` (the extract stage does): the damaged file is then moved
aside to ``features.h5.damaged`` (one line in the log) and its videos are redone, the
parts being kept. ``overwrite=True`` starts afresh whatever the state of the old files:
main file, parts, temporaries and the damaged copy are all removed.

Writers to the same path exclude each other with ``runstate.lock.FileLock`` on
``<features.h5>.lock`` (a kernel record lock: released when the process dies, not
inherited by forked DataLoader workers). The cost of the scheme is one extra copy of
the features at ``close`` (consolidation rewrites the main file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import urllib.parse
from pathlib import Path

import h5py
import numpy as np

from formats.features import (
    FEATURE_DTYPES,
    FeatureStoreError,
    FeatureStoreMismatch,
    attr_differences,
    check_video_id,
    complete_video_ids,
    is_int,
    normalize_root_attrs,
    open_existing,
    read_root_attrs,
    sidecar,
    write_root_attrs,
)
from runstate import atomic
from runstate.lock import FileLock, LockHeld

log = logging.getLogger(__name__)

PART_SUFFIX = ".h5"

class _OpenVideo:
    """A video being written to its temporary part file."""

    def __init__(self, part: atomic.AtomicFile, h5file: h5py.File, num_clips: int):
        self.part = part
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
        overwrite: start fresh, deleting an existing file, its parts and temporaries, instead of
            resuming (and instead of raising ``FeatureStoreMismatch`` when the settings differ).
        recover_damaged: move a main file HDF5 cannot open aside (``.damaged``) and go on with the
            parts, instead of raising ``FeatureStoreError``.
    """

    def __init__(self, path: str | os.PathLike, attrs: dict, dtype: str = "float16", overwrite: bool = False,
                 recover_damaged: bool = False):
        self.path = Path(path)
        self.attrs = normalize_root_attrs(attrs, dtype)
        self.dtype = np.dtype(FEATURE_DTYPES[dtype])
        self.parts_dir = sidecar(self.path, "parts")
        self._in_progress: dict[str, _OpenVideo] = {}
        self._main_ids: set[str] = set()
        self._part_ids: set[str] = set()
        self._closed = False
        atomic.make_dirs(self.path.parent)
        self._lock = FileLock(sidecar(self.path, "lock"), f"writer of feature store {self.path}")
        try:
            self._lock.acquire()
        except LockHeld as error:
            where = "in this process" if "in this process" in str(error) else str(error).split(": ", 1)[-1]
            raise FeatureStoreError(f"another writer is writing feature store {self.path} ({where})") from None
        try:
            self._recover(overwrite, recover_damaged)
        except BaseException:
            self._release_lock()
            raise

    # -------------------------------------------------- opening and recovery

    def _release_lock(self) -> None:
        self._lock.release()

    def _part_path(self, video_id: str) -> Path:
        return self.parts_dir / (urllib.parse.quote(video_id, safe="") + PART_SUFFIX)

    def _recover(self, overwrite: bool, recover_damaged: bool) -> None:
        # a consolidation killed before its replace (and the temporary name of older versions)
        atomic.remove_stale_temporaries(self.path.parent, self.path.name)
        sidecar(self.path, "legacy_merge_tmp").unlink(missing_ok=True)
        if overwrite:
            self.path.unlink(missing_ok=True)
            sidecar(self.path, "damaged").unlink(missing_ok=True)
            shutil.rmtree(self.parts_dir, ignore_errors=True)

        if self.path.exists():
            try:
                h5file = open_existing(self.path)
            except FeatureStoreError as error:
                if not recover_damaged:
                    raise
                damaged = sidecar(self.path, "damaged")
                os.replace(self.path, damaged)
                log.warning("feature store %s is damaged (%s); moved aside to %s, its videos are redone",
                            self.path, str(error.__cause__ or error).splitlines()[0], damaged.name)
            else:
                with h5file:
                    differences = attr_differences(read_root_attrs(h5file), self.attrs)
                    if differences:
                        raise FeatureStoreMismatch(
                            f"feature store {self.path} was written with other extraction settings: "
                            + "; ".join(differences) + " (pass overwrite=True to replace it)")
                    self._main_ids = set(complete_video_ids(h5file))

        attrs_json = self.parts_dir / "attrs.json"
        if self.parts_dir.exists():
            for tmp_part in self.parts_dir.glob("*" + atomic.TMP_SUFFIX):
                tmp_part.unlink()  # a video interrupted mid-write: redone
            part_paths = sorted(self.parts_dir.glob("*" + PART_SUFFIX))
            if attrs_json.exists():
                differences = attr_differences(json.loads(attrs_json.read_text()), self.attrs)
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
                elif not _part_is_whole(part_path, video_id):
                    log.warning("feature store %s: part %s is damaged; video %r is redone", self.path,
                                part_path.name, video_id)
                    part_path.unlink()
                else:
                    self._part_ids.add(video_id)
        atomic.make_dirs(self.parts_dir)
        if not attrs_json.exists():
            atomic.write_json(attrs_json, self.attrs, indent=True)

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
        video_id = check_video_id(video_id)
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
        if not is_int(num_clips) or num_clips < 0:
            raise ValueError(f"feature store: video {video_id!r}: num_clips must be an integer >= 0, "
                             f"got {num_clips!r}")
        if video_id in self._in_progress:
            self.abort_video(video_id)

        part = atomic.AtomicFile(self._part_path(video_id))
        try:
            h5file = h5py.File(part.tmp_path, "w", locking=False)
        except OSError as error:
            part.abort()
            raise atomic.OutputError(part.path, error) from None
        group = h5file.create_group("videos").create_group(video_id)
        # NaN fill makes any row that was never written visible.
        group.create_dataset("features", shape=(int(num_clips), self.attrs["dim"]), dtype=self.dtype,
                             fillvalue=np.nan)
        group.create_dataset("times", shape=(int(num_clips),), dtype=np.float64, fillvalue=np.nan)
        group.attrs["duration"] = duration
        group.attrs["native_fps"] = native_fps
        group.attrs["complete"] = False
        self._in_progress[video_id] = _OpenVideo(part, h5file, int(num_clips))

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
        if not is_int(start_index) or start_index < 0 or start_index + num_rows > video.num_clips:
            raise ValueError(f"feature store: video {video_id!r}: {num_rows} rows from {start_index!r} "
                             f"exceed the {video.num_clips} clip rows")
        with np.errstate(over="ignore"):  # values beyond the dtype's range become inf, rejected just below
            stored = features.astype(self.dtype)
        if not np.isfinite(stored).all() or not np.isfinite(times).all():
            raise ValueError(f"feature store: video {video_id!r}: non-finite features or times in rows "
                             f"{start_index}..{start_index + num_rows - 1} "
                             f"(or values beyond the {self.dtype} range)")
        group = video.h5file["videos"][video_id]
        try:
            group["features"][start_index:start_index + num_rows] = stored
            group["times"][start_index:start_index + num_rows] = times
        except OSError as error:
            raise atomic.OutputError(video.part.path, error) from None
        video.written[start_index:start_index + num_rows] = True

    def finish_video(self, video_id: str) -> None:
        """Mark the video complete and move its part into place atomically (it survives any later kill)."""
        video = self._video_in_progress(video_id)
        missing = np.flatnonzero(~video.written)
        if missing.size:
            raise FeatureStoreError(f"video {video_id!r}: {missing.size} of {video.num_clips} clip rows "
                                    f"never written (first {missing[0]}) in feature store {self.path}")
        try:
            video.h5file["videos"][video_id].attrs["complete"] = True
            video.h5file.close()
        except OSError as error:  # e.g. no space left for the last chunk HDF5 flushes at close
            self.abort_video(video_id)
            raise atomic.OutputError(video.part.path, error) from None
        video.part.commit()
        del self._in_progress[video_id]
        self._part_ids.add(video_id)

    def abort_video(self, video_id: str) -> None:
        """Drop a video in progress (e.g. its decoding failed); nothing of it is kept."""
        video = self._video_in_progress(video_id)
        try:
            video.h5file.close()
        except OSError:
            pass  # the part is dropped anyway
        video.part.abort()
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
            with atomic.atomic_output(self.path) as tmp_path, h5py.File(tmp_path, "w", locking=False) as out:
                write_root_attrs(out, self.attrs)
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


def _part_is_whole(part_path: Path, video_id: str) -> bool:
    """A finished part opens and holds its video, marked complete (it may have been damaged on disk)."""
    try:
        with h5py.File(part_path, "r", locking=False) as part:
            group = part["videos"][video_id]
            return bool(group.attrs.get("complete", False)) and group["features"].shape[0] == group["times"].shape[0]
    except (OSError, KeyError, ValueError):
        return False
