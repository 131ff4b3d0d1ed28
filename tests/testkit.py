"""Helpers shared by the tests (import as `from testkit import ...`; conftest.py holds the fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
EK100_DIR = SHARED_DIR / "data" / "ek100"


def index_frames(num_frames: int, height: int = 64, width: int = 96) -> list[np.ndarray]:
    """Frames whose index is written in binary as 8 black/white vertical bars (survives H.264)."""
    frames = []
    bar = width // 8
    for i in range(num_frames):
        frame = np.zeros((height, width, 3), np.uint8)
        for bit in range(8):
            if (i >> bit) & 1:
                frame[:, bit * bar:(bit + 1) * bar] = 255
        frames.append(frame)
    return frames


def decode_index(frames: np.ndarray) -> np.ndarray:
    """Inverse of `index_frames` for decoded frames (N, H, W, 3) of any size."""
    height, width = frames.shape[1:3]
    bar = width / 8
    bits = [(frames[:, height // 2, int((b + 0.5) * bar), 0] > 127).astype(np.int64) << b for b in range(8)]
    return np.sum(bits, axis=0)


def tiny_config(work_dir: Path, cache_dir: Path, *overrides: str):
    """The end-to-end test config (configs/synthetic-tiny.yaml) writing under `work_dir`."""
    from configs.load import load_config

    return load_config(REPO_ROOT / "configs" / "synthetic-tiny.yaml",
                       [f"runtime.work_dir={work_dir}", f"runtime.cache_dir={cache_dir}", *overrides])
