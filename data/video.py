"""Reading video frames on a timeline of seconds, with decord.

Every stage that reads frames asks for *times*, never native frame numbers: the frame
used for time `t` (seconds from the first frame) is the native frame whose presentation
time is nearest `t`, ties going to the later frame, clamped to the video. For a
constant-rate video that is native frame `round(t * native_fps)`; decord's per-frame
timestamps make the same rule exact for variable-rate videos. So decoding a 59.94 fps
video on a 60 fps timeline, or a 25 fps video on a 30 fps timeline, picks the right frames.

Frames can be resized at decode time (`short_side`): decord's decoder scales them, which
is much cheaper than decoding full-size frames and resizing afterwards.

Any problem (missing, empty, truncated or undecodable file, zero frames) raises
`VideoError(path, reason)`.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import BinaryIO

import decord
import numpy as np

# decord can hold the Python interpreter lock for long decodes; bridge stays numpy.
decord.bridge.set_bridge("native")

# Errors decord (and the file system below it) raise for unreadable input.
_DECODE_ERRORS = (decord.DECORDError, RuntimeError, OSError, ValueError, IndexError)


class VideoError(RuntimeError):
    """A video could not be read. `path` says which, `reason` says why."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


class VideoReader:
    """Random access to the frames of one video, by time or by native index.

    Args:
        source: a file path, or a binary file-like object (e.g. a member of a tar archive).
        short_side: resize frames so that their shorter side has this many pixels
            (aspect ratio kept; None = native size).
        name: what to call the video in errors (defaults to the path).
        num_threads: decoder threads (1 by default: reproducible frames; 0 = decord's choice).

    Attributes:
        native_fps: the container's average frame rate.
        num_frames: number of decodable frames.
        duration: seconds, `num_frames / native_fps` for constant-rate videos, else the
            last frame's end time.
        height, width: size of the returned frames.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, short_side: int | None = None,
                 name: str | None = None, num_threads: int = 1):
        self.name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "<stream>")
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            if not path.is_file():
                raise VideoError(self.name, "file not found")
            if path.stat().st_size == 0:
                raise VideoError(self.name, "empty file (0 bytes)")
            source = str(path)
        elif isinstance(source, io.IOBase) and not source.seekable():
            source = io.BytesIO(source.read())
        self._source = source
        self._num_threads = num_threads
        reader = self._open()  # native size first, to compute the decode size
        try:
            self.num_frames = len(reader)
            if self.num_frames == 0:
                raise VideoError(self.name, "no decodable frames")
            native_height, native_width = reader[0].shape[:2]
            self.native_fps = float(reader.get_avg_fps())
            timestamps = reader.get_frame_timestamp(np.arange(self.num_frames))  # (N, 2) start, end seconds
        except _DECODE_ERRORS as error:
            raise VideoError(self.name, f"cannot decode: {_short(error)}") from None
        if not np.isfinite(self.native_fps) or self.native_fps <= 0:
            raise VideoError(self.name, f"invalid frame rate {self.native_fps}")
        self.frame_times = (timestamps[:, 0] - timestamps[0, 0]).astype(np.float64)  # (N,) seconds
        last_end = float(timestamps[-1, 1] - timestamps[0, 0])
        self.duration = max(last_end, self.num_frames / self.native_fps) if self.num_frames > 1 else \
            1.0 / self.native_fps
        self._constant_rate = bool(np.allclose(
            self.frame_times, np.arange(self.num_frames) / self.native_fps, atol=0.25 / self.native_fps))

        self.height, self.width = native_height, native_width
        if short_side is not None and short_side != min(native_height, native_width):
            scale = short_side / min(native_height, native_width)
            self.height = max(1, int(round(native_height * scale)))
            self.width = max(1, int(round(native_width * scale)))
            del reader
            reader = self._open(width=self.width, height=self.height)
        self._reader = self._working_reader(reader)

    def _working_reader(self, reader):
        """Work around decord 0.6 failing on a few small output widths (8, 12, 16, 24, 48, 72 px).

        Its frame copy then fails with "from_size == to_size"; decoding at a width 2 px
        larger works, so the frames come out that much wider (the height is kept).
        """
        for _ in range(4):
            try:
                reader.get_batch([0])
                reader.seek(0)
                return reader
            except _DECODE_ERRORS as error:
                if "from_size == to_size" not in str(error):
                    raise VideoError(self.name, f"cannot decode: {_short(error)}") from None
            self.width += 2
            reader = self._open(width=self.width, height=self.height)
        raise VideoError(self.name, f"decord cannot decode frames of width {self.width}")

    def _open(self, width: int = -1, height: int = -1):
        source = self._source
        if not isinstance(source, str):
            source.seek(0)
        try:
            return decord.VideoReader(source, ctx=decord.cpu(0), width=width, height=height,
                                      num_threads=self._num_threads)
        except _DECODE_ERRORS as error:
            raise VideoError(self.name, f"cannot open: {_short(error)}") from None

    def frame_indices(self, times_sec: np.ndarray) -> np.ndarray:
        """Native frame index nearest each time (seconds from the first frame), clamped.

        Ties go to the later frame. Returns int64 of the same shape as `times_sec`.
        """
        times = np.asarray(times_sec, dtype=np.float64)
        if self._constant_rate:
            # round(t * fps) with ties up; the epsilon absorbs float error in t = j / target_fps
            indices = np.floor(times * self.native_fps + 0.5 + 1e-6).astype(np.int64)
        else:
            after = np.searchsorted(self.frame_times, times, side="left").clip(1, self.num_frames - 1)
            before = after - 1
            # the later frame wins when it is at least as near
            indices = np.where(self.frame_times[after] - times <= times - self.frame_times[before], after, before)
        return np.clip(indices, 0, self.num_frames - 1)

    def frames(self, indices: np.ndarray) -> np.ndarray:
        """Decode native frames `indices` (any order, repeats allowed) in one batched call.

        Returns `(len(indices), height, width, 3)` uint8 RGB. Each distinct frame is decoded
        once, in increasing order, so sequential access never seeks backwards.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size == 0:
            return np.zeros((0, self.height, self.width, 3), dtype=np.uint8)
        if indices.min() < 0 or indices.max() >= self.num_frames:
            raise VideoError(self.name, f"frame index out of range 0..{self.num_frames - 1}")
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            decoded = self._reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3)
        except _DECODE_ERRORS as error:
            raise VideoError(self.name, f"decoding frames {unique[0]}..{unique[-1]} failed: {_short(error)}") \
                from None
        return decoded[inverse]

    def frames_at(self, times_sec: np.ndarray) -> np.ndarray:
        """Frames at the given times (seconds): `(len(times), height, width, 3)` uint8."""
        return self.frames(self.frame_indices(times_sec))

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"VideoReader({self.name!r}, {self.num_frames} frames, {self.native_fps:.3f} fps, "
                f"{self.width}x{self.height})")


def _short(error: BaseException) -> str:
    """The first line of an exception message (decord appends long C++ stack traces)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    return re.sub(r"^\[[\d:]+\] \S+:\d+: (Error: )?", "", lines[0])[:300]
