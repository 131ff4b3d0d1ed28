"""Reading video frames on a timeline of seconds, with decord.

Every stage that reads frames asks for *times*, never native frame numbers: the frame
used for time `t` (seconds from the first frame) is the native frame whose presentation
time is nearest `t`, ties going to the later frame, clamped to the video. For a
constant-rate video that is native frame `round(t * native_fps)`; decord's per-frame
timestamps make the same rule exact for variable-rate videos. So decoding a 59.94 fps
video on a 60 fps timeline, or a 25 fps video on a 30 fps timeline, picks the right frames.

Frames can be resized at decode time (`short_side`): decord's decoder scales them, which
is much cheaper than decoding full-size frames and resizing afterwards.

One decoder open per video. decord takes the output size when it opens a video, and
opening reads the whole file once (it indexes every packet), so the native size is read
first from the container header with PyAV (`probe`, a few kilobytes), and decord opens
the video once, at the final size.

Where the bytes come from (`VideoReader(source)`):

* a path: decord reads the file.
* a `ByteRange` (a member of an uncompressed tar, or a stored zip member): decord reads
  that byte range of the archive in place, through ffmpeg's `subfile` protocol. Nothing
  is copied; memory is that of the plain file.
* a binary file object (a member of a `.tar.gz` or a deflated zip, which cannot be read
  at random): it is copied block by block (`SPILL_BLOCK_BYTES`) to a temporary file in
  `tempfile.gettempdir()` (`$TMPDIR`), which is deleted as soon as decord has opened it
  (decord keeps its own descriptor, so the space is freed when the reader is). Disk use
  is bounded by the video's size, memory by one block. (decord's own file-object support
  reads the object whole into memory and its C++ side copies it again: 2-3x the video per
  reader. It is not used.)

MPEG transport and program streams (`.ts`, `.mts`, `.m2ts`, `.mpg`, `.vob`;
`REMUXED_CONTAINERS`): decord 0.6 mislabels their frames (it starts decoding at the
second keyframe but calls it frame 0, and its random access lands on the wrong frames
near the end). Their video packets are therefore copied unchanged (no re-encoding) into
a temporary MP4 file, deleted as soon as decord has opened it, like a spilled stream.
That costs one read and one write of the video.

Decoder messages are silenced: ffmpeg's log level is set to quiet, and decord's own
logger, which prints errors such as "ERROR opening: ..." from C++, writes to file
descriptor 2, which points at /dev/null while decord runs (`_quiet_stderr`). A bad video
costs exactly one line: the `VideoError` its caller reports.

Any problem (missing, empty, truncated or undecodable file, zero frames) raises
`VideoError(path, reason)`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import decord
import numpy as np

# decord can hold the Python interpreter lock for long decodes; bridge stays numpy.
decord.bridge.set_bridge("native")
# ffmpeg's messages (decord's bundled libav*); PyAV's own ffmpeg logs nothing by default.
decord.logging.set_level(decord.logging.QUIET)

# Errors decord (and the file system below it) raise for unreadable input. decord asserts a
# positive frame count after opening, hence AssertionError.
_DECODE_ERRORS = (decord.DECORDError, RuntimeError, OSError, ValueError, IndexError, AssertionError)
# Errors of PyAV reading a container (av.FFmpegError covers ffmpeg's error codes).
_PYAV_ERRORS = (av.FFmpegError, OSError, ValueError, IndexError, UnicodeDecodeError)
# Output widths whose frame copy fails in decord 0.6 ("from_size == to_size"), found by trying
# every width from 1 to 1000 px at several heights: decoding 2 px wider works.
_DECORD_BAD_WIDTHS = frozenset({1, 2, 3, 4, 6, 8, 12, 16, 24, 48, 72})
# PyAV's names of the containers decord misreads; they are remuxed to MP4 first (module docstring).
REMUXED_CONTAINERS = {"mpegts": "MPEG-TS", "mpeg": "MPEG-PS"}
SPILL_BLOCK_BYTES = 1 << 20  # copy size when a stream is spilled to a temporary file
_TEMPORARY_PREFIX = "tal-video-"


class VideoError(RuntimeError):
    """A video could not be read. `path` says which, `reason` says why."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class ByteRange:
    """A video stored as contiguous bytes inside a bigger file, read in place.

    Attributes:
        path: the file holding it (an uncompressed tar, a zip whose member is stored).
        offset: where the video's first byte is, bytes from the start of `path`.
        size: the video's length in bytes.
    """

    path: str
    offset: int
    size: int


@dataclass(frozen=True)
class VideoProbe:
    """What the container header says (PyAV): the video stream decord decodes, and the container.

    Attributes:
        height, width: native frame size in pixels.
        container: PyAV's name of the container format ("mpegts", "mov,mp4,m4a,3gp,3g2,mj2", ...).
    """

    height: int
    width: int
    container: str


_quiet_lock = threading.Lock()
_quiet_depth = 0  # nesting of _quiet_stderr blocks in this process (threads included)
_saved_stderr_fd = -1


@contextlib.contextmanager
def _quiet_stderr():
    """Point file descriptor 2 at /dev/null for the block (decord's C++ logger writes there).

    Nested and concurrent blocks share one redirection: the first opens it, the last closes it.
    Whatever another thread of this process writes to descriptor 2 meanwhile is lost too; the
    pipeline's console (``runstate.runtime.console_stream``) writes through a duplicate of it.
    """
    global _quiet_depth, _saved_stderr_fd
    with _quiet_lock:
        if _quiet_depth == 0:
            sys.stderr.flush()
            _saved_stderr_fd = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                os.dup2(_saved_stderr_fd, 2)
                os.close(_saved_stderr_fd)
                _saved_stderr_fd = -1


def probe(uri: str) -> VideoProbe | None:
    """The container header of a file (or ffmpeg URL), read with PyAV; None when it holds no video
    stream PyAV can size (not a video, damaged, or a format only decord knows)."""
    try:
        with av.open(uri) as container:
            stream = container.streams.best("video")  # the stream decord picks (av_find_best_stream)
            if stream is None:
                return None
            height, width = int(stream.codec_context.height), int(stream.codec_context.width)
            name = str(container.format.name)
    except _PYAV_ERRORS:
        return None
    return VideoProbe(height, width, name) if height > 0 and width > 0 else None


def decode_size(native_height: int, native_width: int, short_side: int | None) -> tuple[int, int]:
    """`(height, width)` of frames resized so that the shorter side is `short_side` (aspect kept).

    None, or the native short side, keeps the native size. The width then steps past the
    widths decord 0.6 cannot copy (`_DECORD_BAD_WIDTHS`), 2 px at a time.
    """
    height, width = native_height, native_width
    if short_side is not None and short_side != min(native_height, native_width):
        scale = short_side / min(native_height, native_width)
        height = max(1, int(round(native_height * scale)))
        width = max(1, int(round(native_width * scale)))
    while width in _DECORD_BAD_WIDTHS:
        width += 2
    return height, width


def _temporary_file(suffix: str) -> tuple[int, str]:
    return tempfile.mkstemp(prefix=_TEMPORARY_PREFIX, suffix=suffix)


def spill_to_file(stream: BinaryIO, suffix: str = "") -> str:
    """Copy a binary stream into a new temporary file, `SPILL_BLOCK_BYTES` at a time; returns its path.

    The caller deletes the file. Memory used: one block.
    """
    handle, path = _temporary_file(suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            shutil.copyfileobj(stream, out, SPILL_BLOCK_BYTES)
    except BaseException:
        os.unlink(path)
        raise
    return path


def remux_to_mp4(uri: str) -> str:
    """Copy the packets of the video stream of `uri` unchanged into a new temporary MP4 file;
    returns its path (the caller deletes it). Audio and other streams are left out."""
    handle, path = _temporary_file(".mp4")
    os.close(handle)
    try:
        with av.open(uri) as source, av.open(path, "w", format="mp4") as target:
            video = source.streams.best("video")
            copy = target.add_stream_from_template(video)
            for packet in source.demux(video):
                if packet.dts is None:  # the demuxer's end-of-stream marker, no data
                    continue
                packet.stream = copy
                target.mux(packet)
    except BaseException:
        os.unlink(path)
        raise
    return path


class VideoReader:
    """Random access to the frames of one video, by time or by native index.

    Args:
        source: a file path, a `ByteRange` of a file, or a binary file object (e.g. a member of a
            compressed tar), read as the module docstring says.
        short_side: resize frames so that their shorter side has this many pixels
            (aspect ratio kept; None = native size).
        name: what to call the video in errors (defaults to the path).
        num_threads: decoder threads (1 by default: reproducible frames; 0 = decord's choice).

    Attributes:
        native_fps: the container's average frame rate.
        num_frames: number of decodable frames.
        duration: seconds, `num_frames / native_fps` for constant-rate videos, else the
            last frame's end time.
        height, width: size of the returned frames (decord 0.6 cannot produce a few small
            widths; those come out 2 px wider, see `decode_size`).
        num_opens: how many times decord opened the video: 1, unless PyAV could not read the
            header (decord then opens it at native size first) or decord refused the size,
            plus one per read after a `release`.

    Random access across many videos (training clips in shuffled order) should `release` a
    reader before moving to the next video: decord 0.6 decodes about three times the frames
    when a seek lands on a reader that sat idle while others were used (measured in
    `bench/clips.py`: shuffled clips from 64 held readers cost 2-3x the CPU of reopening each
    video), and reopening a released reader skips the probe, the frame index check and the
    first-frame decode of a first open.
    """

    def __init__(self, source: str | os.PathLike | ByteRange | BinaryIO, short_side: int | None = None,
                 name: str | None = None, num_threads: int = 1):
        if name is None:
            name = str(source.path) if isinstance(source, ByteRange) else \
                str(source) if isinstance(source, (str, os.PathLike)) else "<stream>"
        self.name = name
        self._num_threads = num_threads
        self.num_opens = 0
        temporaries = []  # spilled or remuxed copies, deleted once decord has the video open
        try:
            if isinstance(source, (str, os.PathLike)):
                self._uri = self._checked_file(Path(source))
            elif isinstance(source, ByteRange):
                self._uri = self._byte_range_uri(source)
            else:
                self._uri = self._spill(source, temporaries)
            header = probe(self._uri)
            if header is not None and header.container in REMUXED_CONTAINERS:
                self._uri = self._remux(header.container, temporaries)
            with _quiet_stderr():
                self._reader = self._open_at_size(header, short_side)
        finally:
            self._reopenable = not temporaries  # a spilled or remuxed copy is gone once decord has it
            for path in temporaries:
                os.unlink(path)  # decord holds the file open; the space is freed with the reader

    def _checked_file(self, path: Path) -> str:
        if not path.is_file():
            raise VideoError(self.name, "file not found")
        if path.stat().st_size == 0:
            raise VideoError(self.name, "empty file (0 bytes)")
        return str(path)

    def _byte_range_uri(self, byte_range: ByteRange) -> str:
        """ffmpeg's `subfile` URL of the range; the inner path is absolute, so that no part of it
        (a colon, say) is taken for a protocol name."""
        path = Path(byte_range.path)
        if not path.is_file():
            raise VideoError(self.name, "file not found")
        if byte_range.size <= 0:
            raise VideoError(self.name, "empty file (0 bytes)")
        end = byte_range.offset + byte_range.size
        if byte_range.offset < 0 or end > path.stat().st_size:
            raise VideoError(self.name, f"bytes {byte_range.offset}..{end} lie outside {path} "
                                        f"({path.stat().st_size} bytes): truncated archive?")
        return f"subfile,,start,{byte_range.offset},end,{end},,:{os.path.abspath(path)}"

    def _spill(self, stream: BinaryIO, temporaries: list[str]) -> str:
        suffix = Path(self.name).suffix
        try:
            path = spill_to_file(stream, suffix if len(suffix) <= 8 else "")
        # Reading a stream fails in its own ways (EOFError of a cut .tar.gz, zlib.error, zipfile's
        # BadZipFile on a CRC mismatch, OSError of a full disk): all of them are this video's failure.
        except Exception as error:  # noqa: BLE001
            raise VideoError(self.name, f"cannot copy the stream to a temporary file: "
                                        f"{type(error).__name__}: {_short(error)}") from None
        temporaries.append(path)
        if os.path.getsize(path) == 0:
            raise VideoError(self.name, "empty file (0 bytes)")
        return path

    def _remux(self, container: str, temporaries: list[str]) -> str:
        try:
            path = remux_to_mp4(self._uri)
        except (*_PYAV_ERRORS, RuntimeError) as error:
            raise VideoError(self.name, f"cannot copy the {REMUXED_CONTAINERS[container]} video into MP4: "
                                        f"{_short(error)}") from None
        temporaries.append(path)
        return path

    def _open_at_size(self, header: VideoProbe | None, short_side: int | None):
        """Open decord once at the decode size and read the metadata; returns the decord reader."""
        reader = None
        if header is not None:
            native = (header.height, header.width)
        else:
            # PyAV cannot read the header: decord's first frame at native size tells the size (a second
            # open follows only when the decode size differs).
            reader = self._open()
            try:
                native = tuple(int(size) for size in reader[0].shape[:2])
            except _DECODE_ERRORS as error:
                raise VideoError(self.name, f"cannot decode: {_short(error)}") from None
        height, width = decode_size(native[0], native[1], short_side)
        if reader is None or (height, width) != native:
            reader = self._open(width=width, height=height)
        try:
            self.num_frames = len(reader)
            if self.num_frames == 0:
                raise VideoError(self.name, "no decodable frames")
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
        return self._working_reader(reader, height, width)

    def _working_reader(self, reader, height: int, width: int):
        """Decode frame 0 (then seek back) to learn the output size and catch a failing first frame.

        decord 0.6 fails to copy frames of a few output widths ("from_size == to_size");
        `decode_size` avoids the known ones, and should another fail, the video is opened again
        2 px wider (the height is kept).
        """
        for _ in range(4):
            try:
                first = reader.get_batch([0]).asnumpy()  # (1, H, W, 3)
                reader.seek(0)
                self.height, self.width = (int(size) for size in first.shape[1:3])
                return reader
            except _DECODE_ERRORS as error:
                if "from_size == to_size" not in str(error):
                    raise VideoError(self.name, f"cannot decode: {_short(error)}") from None
            width += 2
            reader = self._open(width=width, height=height)
        raise VideoError(self.name, f"decord cannot decode frames of width {width}")

    def _open(self, width: int = -1, height: int = -1):
        """A decord reader on the source at `width` x `height` (-1: native); counted in `num_opens`."""
        self.num_opens += 1
        try:
            return decord.VideoReader(self._uri, ctx=decord.cpu(0), width=width, height=height,
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
        reader = self._reader if self._reader is not None else self._reopen()
        try:
            with _quiet_stderr():
                decoded = reader.get_batch(unique.tolist()).asnumpy()  # (U, H, W, 3)
        except _DECODE_ERRORS as error:
            raise VideoError(self.name, f"decoding frames {unique[0]}..{unique[-1]} failed: {_short(error)}") \
                from None
        return decoded[inverse]

    def release(self) -> None:
        """Close the decoder (its thread and buffers) but keep what was learnt of the video; the next
        read opens decord again at the same size. A no-op for a spilled or remuxed stream, whose
        temporary copy is gone (its reader stays open)."""
        if self._reopenable:
            self._reader = None

    def _reopen(self):
        with _quiet_stderr():
            reader = self._open(width=self.width, height=self.height)
        if len(reader) != self.num_frames:
            raise VideoError(self.name, f"changed on disk: {len(reader)} frames, {self.num_frames} when first opened")
        self._reader = reader
        return reader

    def frames_at(self, times_sec: np.ndarray) -> np.ndarray:
        """Frames at the given times (seconds): `(len(times), height, width, 3)` uint8."""
        return self.frames(self.frame_indices(times_sec))

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"VideoReader({self.name!r}, {self.num_frames} frames, {self.native_fps:.3f} fps, "
                f"{self.width}x{self.height})")


def _short(error: BaseException) -> str:
    """The first line of an exception message, without decord's "[hh:mm:ss] file.cc:line: " prefixes
    (decord appends long C++ stack traces and nests its messages)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    return re.sub(r"\[[\d:]+\] \S+:\d+: (Error: )?", "", lines[0]).strip()[:300]
