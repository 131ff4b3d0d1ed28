"""Where the `clips` mode samples clips inside a proposal.

A proposal ``[start, end]`` of length ``L = end - start`` gets ``n`` clip centres evenly inside
it, one per equal part: ``centre_i = start + (i + 0.5) * L / n`` for ``i < n``. The frames of a
clip centred there follow ``data.clip_geometry.ClipGeometry`` with the feature store's clip
settings, so a clip whose centre is a feature-extraction clip centre sees exactly the frames
that extraction gave that clip.
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
