"""Where the frames of a clip are: the one rule of finetune, extract and classify.

Frames live on a *decode-fps timeline*: target frame ``j`` shows time ``j / fps`` seconds
(whatever the file's native rate; ``data.video.VideoReader`` maps a time to the native frame
nearest it). A clip is ``num_frames`` target frames ``interval_frames`` apart; its time (its
*centre*) is the midpoint between its first and last frame.

A clip centred at ``c`` seconds starts at target frame ``round(c * fps - (T - 1) * interval / 2)``
(halves rounded up) and takes ``start + k * interval`` for ``k < T``; frames before the video
start are clamped to frame 0 (the reader clamps frames past the end to the last frame). So a
clip centred at a feature-extraction clip centre sees exactly the frames extraction gave that
clip, a training clip sees frames of the same timeline, and classification in clips mode
sees the frames extraction saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipGeometry:
    """Frames per clip, their spacing and the timeline they are on.

    Attributes:
        num_frames: T, frames per clip.
        interval_frames: target frames between consecutive frames of a clip.
        fps: the decode-fps timeline (target frames per second).
    """

    num_frames: int
    interval_frames: int
    fps: float

    def __post_init__(self):
        if self.num_frames < 1 or self.interval_frames < 1 or not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"clip geometry: need num_frames >= 1, interval_frames >= 1 and a finite fps > 0, "
                             f"got {self.num_frames}, {self.interval_frames}, {self.fps}")

    @property
    def span_frames(self) -> int:
        """Target frames from the first to the last frame of a clip."""
        return (self.num_frames - 1) * self.interval_frames

    @property
    def span_sec(self) -> float:
        """Seconds from the first to the last frame of a clip."""
        return self.span_frames / self.fps

    def center_sec(self, first_frame: np.ndarray | int) -> np.ndarray:
        """Centre times (seconds) of clips whose first target frame is ``first_frame`` (any shape)."""
        return (np.asarray(first_frame, dtype=np.float64) + self.span_frames / 2.0) / self.fps

    def frame_ids(self, centers_sec: np.ndarray | float) -> np.ndarray:
        """``(..., T)`` int64 target frames (>= 0) of clips centred at ``centers_sec`` (``(...,)`` seconds)."""
        centers = np.asarray(centers_sec, dtype=np.float64)
        first = np.floor(centers * self.fps - self.span_frames / 2.0 + 0.5).astype(np.int64)
        offsets = np.arange(self.num_frames, dtype=np.int64) * self.interval_frames  # (T,)
        return np.maximum(first[..., None] + offsets, 0)  # (..., 1) + (T,) -> (..., T)

    def frame_times(self, centers_sec: np.ndarray | float) -> np.ndarray:
        """``(..., T)`` float64 times (seconds) of the frames of clips centred at ``centers_sec``."""
        return self.frame_ids(centers_sec) / self.fps
