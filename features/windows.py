"""Sliding-window clip sampling on a target-fps timeline, and decode-once chunking.

Units and definitions (every stage that samples clips uses these):

* The video is decoded on a *target* timeline of ``fps`` frames per second (the
  dataset's decode fps: HACS 30, EK100 60). Target frame ``j`` has time
  ``j / fps`` seconds; which native frame shows that time is the video reader's
  business (nearest presentation time).
* A video of ``duration_sec`` seconds has ``num_target_frames`` target frames:
  every ``j >= 0`` with ``j / fps < duration_sec``, i.e. ``ceil(duration_sec * fps)``
  (the product rounded to 6 decimals first, so that 10.0 s at 30 fps is 300 frames
  and not 301 through float noise), and at least 1, so that a one-frame video
  (whose duration may be reported as 0) still has one frame. The last target
  frame is ``last_frame = num_target_frames - 1``.
* Clip ``k`` starts at target frame ``k * stride_frames`` and takes the target
  frames ``start + i * interval_frames`` for ``i < num_frames``. Frames past
  ``last_frame`` are padded by repeating the last frame (their index is clamped
  to ``last_frame``).
* Clips continue while their start is a frame of the video: clip ``k`` exists iff
  ``k * stride_frames <= last_frame``, so there are ``last_frame // stride_frames + 1``
  clips. A video shorter than one clip therefore yields exactly one clip, and the
  features form a uniform grid of one clip per ``stride_frames`` target frames.
* A clip's time is its centre: the midpoint between the times of its first and
  last sampled frames *before padding*,
  ``(start + (num_frames - 1) * interval_frames / 2) / fps`` seconds. It is the
  nominal centre of the frames the clip looks at, so the centres are exactly
  uniform (spacing ``stride_frames / fps``). For the padded clips at the end of
  a video the centre may lie past ``duration_sec``.

Only the target frames that some clip uses are listed (``ClipGrid.frame_ids``),
sorted by time; clips index into that list. ``chunks`` splits the clips into
groups of consecutive clips for bounded memory and says, per group, which
frames to decode (each needed frame exactly once, in time order) and which of
the previously decoded frames to keep.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from data.clip_geometry import ClipGeometry


@dataclass(frozen=True)
class ClipGrid:
    """All clips of one video and the unique target frames they need.

    Attributes:
        fps: target timeline rate (frames per second).
        num_frames: frames per clip.
        interval_frames: gap between consecutive frames of a clip (target frames).
        stride_frames: gap between consecutive clip starts (target frames).
        num_target_frames: target frames in the video (see the module docstring).
        frame_ids: (F,) int64 target frame indices used by at least one clip, sorted ascending.
        frame_times_sec: (F,) float64 ``frame_ids / fps``.
        clip_frame_ids: (N, num_frames) int64 positions into ``frame_ids`` (padding included).
        clip_centers_sec: (N,) float64 clip-centre times.
    """

    fps: float
    num_frames: int
    interval_frames: int
    stride_frames: int
    num_target_frames: int
    frame_ids: np.ndarray
    frame_times_sec: np.ndarray
    clip_frame_ids: np.ndarray
    clip_centers_sec: np.ndarray

    @property
    def num_clips(self) -> int:
        return int(self.clip_frame_ids.shape[0])

    @property
    def clip_frame_times_sec(self) -> np.ndarray:
        """(N, num_frames) float64 time of every frame of every clip (padding repeats the last frame)."""
        return self.frame_times_sec[self.clip_frame_ids]


@dataclass(frozen=True)
class ClipChunk:
    """One group of consecutive clips and how to get its frames from the previous group.

    The extraction loop keeps a frame buffer. For each chunk, in order:
    ``buffer = concat(previous_buffer[keep_from_previous], decode(decode_times_sec))``
    and then ``clips = buffer[clip_frame_ids]`` (shape (num_clips, num_frames, ...)).

    Attributes:
        clip_start, clip_stop: the chunk holds clips ``clip_start .. clip_stop - 1`` of the grid.
        keep_from_previous: (K,) int64 positions into the previous chunk's buffer to keep, in order.
        decode_frame_ids: (D,) int64 positions into ``ClipGrid.frame_ids`` to decode now, ascending.
        decode_times_sec: (D,) float64 times of those frames.
        buffer_frame_ids: (K + D,) int64 positions into ``ClipGrid.frame_ids`` of this chunk's buffer
            (kept frames first, then the decoded ones; ascending).
        clip_frame_ids: (clip_stop - clip_start, num_frames) int64 positions into this chunk's buffer.
    """

    clip_start: int
    clip_stop: int
    keep_from_previous: np.ndarray
    decode_frame_ids: np.ndarray
    decode_times_sec: np.ndarray
    buffer_frame_ids: np.ndarray
    clip_frame_ids: np.ndarray


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"clip sampling: {name} must be a positive integer, got {value!r}")
    return int(value)


def num_target_frames(duration_sec: float, fps: float) -> int:
    """Number of target frames ``j`` with ``j / fps < duration_sec`` (at least 1)."""
    duration_sec = float(duration_sec)
    fps = float(fps)
    if not math.isfinite(duration_sec) or duration_sec < 0:
        raise ValueError(f"clip sampling: duration_sec must be finite and >= 0, got {duration_sec!r}")
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"clip sampling: fps must be finite and > 0, got {fps!r}")
    return max(1, math.ceil(round(duration_sec * fps, 6)))


def clip_grid(duration_sec: float, fps: float, num_frames: int, interval_frames: int,
              stride_frames: int) -> ClipGrid:
    """Lay the clips of one video on the target timeline (rules in the module docstring).

    Args:
        duration_sec: video duration in seconds (>= 0).
        fps: target decode rate, frames per second.
        num_frames: frames per clip (paper: 8).
        interval_frames: target frames between consecutive frames of a clip (paper: 8).
        stride_frames: target frames between consecutive clip starts (HACS 16, EK100 8).
    """
    num_frames = _check_positive_int(num_frames, "num_frames")
    interval_frames = _check_positive_int(interval_frames, "interval_frames")
    stride_frames = _check_positive_int(stride_frames, "stride_frames")
    total_frames = num_target_frames(duration_sec, fps)
    last_frame = total_frames - 1
    num_clips = last_frame // stride_frames + 1

    clip_starts = np.arange(num_clips, dtype=np.int64) * stride_frames  # (N,)
    frame_offsets = np.arange(num_frames, dtype=np.int64) * interval_frames  # (num_frames,)
    # (N, 1) + (1, num_frames) -> (N, num_frames) target frame indices, padded by clamping.
    target_ids = np.minimum(clip_starts[:, None] + frame_offsets[None, :], last_frame)
    frame_ids, positions = np.unique(target_ids, return_inverse=True)
    clip_frame_ids = positions.reshape(num_clips, num_frames).astype(np.int64)  # (N*num_frames,) -> (N, nf)

    clip_centers_sec = ClipGeometry(num_frames, interval_frames, float(fps)).center_sec(clip_starts)  # (N,)
    return ClipGrid(
        fps=float(fps),
        num_frames=num_frames,
        interval_frames=interval_frames,
        stride_frames=stride_frames,
        num_target_frames=total_frames,
        frame_ids=frame_ids.astype(np.int64),
        frame_times_sec=frame_ids.astype(np.float64) / float(fps),
        clip_frame_ids=clip_frame_ids,
        clip_centers_sec=clip_centers_sec,
    )


def clip_frame_times(duration_sec: float, fps: float, num_frames: int, interval_frames: int,
                     stride_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Convenience: ``(frame times (N, num_frames) float64 seconds, clip centres (N,) float64 seconds)``."""
    grid = clip_grid(duration_sec, fps, num_frames, interval_frames, stride_frames)
    return grid.clip_frame_times_sec, grid.clip_centers_sec


def chunks(grid: ClipGrid, clips_per_chunk: int) -> Iterator[ClipChunk]:
    """Split the grid's clips into chunks of ``clips_per_chunk`` consecutive clips.

    Every frame of ``grid.frame_ids`` is decoded in exactly one chunk, and the
    decode lists concatenated over the chunks are ``0 .. F-1`` in order, so the
    reader moves forward through the video only. A chunk decodes every frame up
    to the last frame its clips need; a frame stays in the buffer until the last
    chunk that uses it. The buffer holds at most the frames between the first
    frame of the chunk's first clip and the last frame of its last clip (plus
    frames skipped by an unusual stride/interval and needed later), so memory
    is bounded by the chunk size, not the video length.
    """
    clips_per_chunk = _check_positive_int(clips_per_chunk, "clips_per_chunk")
    num_clips = grid.num_clips
    num_unique = grid.frame_ids.shape[0]

    # Last chunk that uses each unique frame: decides how long the frame is kept.
    clip_chunk = np.arange(num_clips, dtype=np.int64) // clips_per_chunk  # (N,)
    last_use_chunk = np.full(num_unique, -1, dtype=np.int64)
    # (N, num_frames) -> (N*num_frames,) positions, each paired with its clip's chunk.
    np.maximum.at(last_use_chunk, grid.clip_frame_ids.reshape(-1), np.repeat(clip_chunk, grid.num_frames))

    previous_buffer = np.zeros(0, dtype=np.int64)  # positions into grid.frame_ids
    decoded_up_to = 0  # frames 0 .. decoded_up_to - 1 have been decoded
    for chunk_index, clip_start in enumerate(range(0, num_clips, clips_per_chunk)):
        clip_stop = min(clip_start + clips_per_chunk, num_clips)
        chunk_clip_ids = grid.clip_frame_ids[clip_start:clip_stop]  # (n, num_frames) global positions
        needed_up_to = max(decoded_up_to, int(chunk_clip_ids.max()) + 1)

        keep_from_previous = np.flatnonzero(last_use_chunk[previous_buffer] >= chunk_index)
        decode_frame_ids = np.arange(decoded_up_to, needed_up_to, dtype=np.int64)
        buffer_frame_ids = np.concatenate([previous_buffer[keep_from_previous], decode_frame_ids])
        # buffer_frame_ids is ascending, so a global position maps to its buffer slot by binary search.
        local_clip_ids = np.searchsorted(buffer_frame_ids, chunk_clip_ids)
        yield ClipChunk(
            clip_start=clip_start,
            clip_stop=clip_stop,
            keep_from_previous=keep_from_previous.astype(np.int64),
            decode_frame_ids=decode_frame_ids,
            decode_times_sec=grid.frame_times_sec[decode_frame_ids],
            buffer_frame_ids=buffer_frame_ids,
            clip_frame_ids=local_clip_ids.astype(np.int64),
        )
        previous_buffer = buffer_frame_ids
        decoded_up_to = needed_up_to
