"""Writing H.264 MP4 files with PyAV (the synthetic dataset and test fixtures)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def fps_fraction(fps: float) -> Fraction:
    """30 -> 30/1, 29.97 -> 30000/1001, 59.94 -> 60000/1001 (NTSC rates exactly)."""
    for base in (24, 30, 48, 60, 120):
        if abs(fps - base * 1000 / 1001) < 1e-3:
            return Fraction(base * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 20,
              preset: str = "veryfast", keyframe_interval: int = 0) -> Path:
    """Encode RGB frames `(H, W, 3)` uint8 (H and W even) to an H.264 MP4 at `fps`.

    `keyframe_interval` (frames, 0 = x264's default of 250) bounds how far a random seek
    must decode from; short intervals make random clip access cheap.

    Written to a temporary name and renamed, so a crash never leaves a half-written
    file under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps_fraction(fps))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        if keyframe_interval > 0:
            stream.options["g"] = str(keyframe_interval)
        first = True
        for frame in frames:
            if first:
                stream.height, stream.width = frame.shape[:2]
                first = False
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        if first:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path
