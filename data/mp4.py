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
    file under the final name. The same frames always give the same file: no B-frames, and
    every frame gets its timestamp (`i / fps`). With libx264's default B-frames a few frames of a
    video decoded differently from one run to the next (40 encodes of one synthetic video gave
    25 different files), and so did everything trained on them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        rate = fps_fraction(fps)
        stream = container.add_stream("libx264", rate=rate)
        stream.pix_fmt = "yuv420p"
        # No B-frames: with them (x264's default of 3), the same frames gave different files from
        # run to run. Switching off the macroblock tree cures it too, but costs 60 % in size and
        # 25 % in decoding time at crf 20; without B-frames the files are about as large. No scene-cut
        # keyframes either: keyframes come every `keyframe_interval` frames, as asked (x264 put one
        # on a quarter of the frames of the synthetic set without B-frames).
        stream.options = {"crf": str(crf), "preset": preset, "bf": "0", "sc_threshold": "0"}
        if keyframe_interval > 0:
            stream.options["g"] = str(keyframe_interval)
        num_frames = 0
        for frame in frames:
            if num_frames == 0:
                stream.height, stream.width = frame.shape[:2]
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            picture.pts, picture.time_base = num_frames, 1 / rate  # frame i at i / fps seconds
            num_frames += 1
            for packet in stream.encode(picture):
                container.mux(packet)
        if num_frames == 0:
            raise ValueError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path
