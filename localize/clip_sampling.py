"""Where the `clips` mode samples clips inside a proposal, on the extraction timeline.

Definitions (times in seconds, frames on the decode-fps timeline of `extract.fps`, where
target frame ``j`` shows time ``j / fps``, as in `features.windows`):

* A proposal ``[start, end]`` of length ``L = end - start`` gets ``n`` clip centres evenly
  inside it, one per equal part: ``centre_i = start + (i + 0.5) * L / n`` for ``i < n``.
* A clip of ``T`` frames, ``interval`` target frames apart, centred at ``c`` starts at target
  frame ``round(c * fps - (T - 1) * interval / 2)`` (halves rounded up) and takes
  ``start + k * interval`` for ``k < T``; frames before the video start are clamped to frame 0
  (the reader clamps frames past the end to the last frame). So a clip whose centre is a
  feature-extraction clip centre sees exactly the frames that extraction gave that clip.
"""

from __future__ import annotations

import numpy as np


def proposal_clip_centers(segments_sec: np.ndarray, num_clips: int) -> np.ndarray:
    """(P, 2) proposals ``[start, end]`` s -> (P, num_clips) clip centres ``start + (i + 0.5) * L / n`` s."""
    segments_sec = np.asarray(segments_sec, dtype=np.float64).reshape(-1, 2)
    if num_clips < 1:
        raise ValueError(f"clip sampling: num_clips must be >= 1, got {num_clips}")
    lengths = segments_sec[:, 1] - segments_sec[:, 0]  # (P,)
    fractions = (np.arange(num_clips) + 0.5) / num_clips  # (n,)
    return segments_sec[:, :1] + lengths[:, None] * fractions[None, :]  # (P, 1) + (P, n) -> (P, n)


def clip_target_frames(centers_sec: np.ndarray, num_frames: int, interval_frames: int,
                       fps: float) -> np.ndarray:
    """Target frame indices of clips centred at ``centers_sec``.

    Args:
        centers_sec: (...,) clip centres in seconds.
        num_frames: T, frames per clip.
        interval_frames: target frames between consecutive frames of a clip.
        fps: the decode-fps timeline (frames per second).

    Returns:
        (..., T) int64 target frame indices, >= 0 (the time of frame ``j`` is ``j / fps``).
    """
    if num_frames < 1 or interval_frames < 1 or not fps > 0:
        raise ValueError(f"clip sampling: need num_frames >= 1, interval_frames >= 1 and fps > 0, got "
                         f"{num_frames}, {interval_frames}, {fps}")
    centers = np.asarray(centers_sec, dtype=np.float64)
    first = np.floor(centers * fps - (num_frames - 1) * interval_frames / 2.0 + 0.5).astype(np.int64)
    offsets = np.arange(num_frames, dtype=np.int64) * interval_frames  # (T,)
    return np.maximum(first[..., None] + offsets, 0)  # (..., 1) + (T,) -> (..., T)
