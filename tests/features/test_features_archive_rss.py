"""Peak memory of extracting a large archive member, against the same video as a plain file.

Each input is decoded in a fresh subprocess the way an extraction worker decodes it
(``list_sources`` + ``ClipBatchDataset``), and the child reports its peak RSS (``VmHWM``).
A member read whole into memory (what decord's file-object path does, 2-3 copies) costs
a multiple of its size; read in place or spilled to a temporary file it costs about
nothing. The machine is shared and noisy, so the test asserts only the order of magnitude
(less than the member's size) and prints the figures (``pytest -s``); ``bench/archive_rss.py``
measures a 170 MB member.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from data.mp4 import write_mp4

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_FRAMES = 70  # lossless 640x360 noise: about 0.43 MB a frame, 30 MB in all

CHILD = """
import json, sys
from features.decode import ClipBatch, ClipBatchDataset, ClipSampling
from features.sources import list_sources
sampling = ClipSampling(fps=30.0, num_frames=8, interval_frames=8, stride_frames=16, short_side=128)
items = list(ClipBatchDataset(list_sources(sys.argv[1]), sampling, clips_per_chunk=32, batch_size=16))
assert items and all(isinstance(item, ClipBatch) for item in items), items
with open("/proc/self/status") as handle:
    peak_kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
print(json.dumps({"peak_kib": peak_kib, "clips": sum(len(item.times_sec) for item in items)}))
"""


def peak_rss_mib(path: Path) -> tuple[float, int]:
    """(peak RSS in MiB, clips decoded) of a child decoding every clip of ``path``."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["peak_kib"] / 1024, report["clips"]


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    frames = (rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(NUM_FRAMES))
    video = write_mp4(folder / "big.mp4", frames, 30, crf=0, preset="ultrafast")
    inputs = {"plain": video, "tar": folder / "big.tar", "tar.gz": folder / "big.tar.gz",
              "zip deflated": folder / "big.zip"}
    with tarfile.open(inputs["tar"], "w") as tar:
        tar.add(video, arcname="videos/big.mp4")
    with tarfile.open(inputs["tar.gz"], "w:gz", compresslevel=1) as tar:
        tar.add(video, arcname="videos/big.mp4")
    with zipfile.ZipFile(inputs["zip deflated"], "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zip_file:
        zip_file.write(video, arcname="videos/big.mp4")
    return inputs


def test_archive_members_cost_far_less_memory_than_their_size(big_inputs):
    member_mib = big_inputs["plain"].stat().st_size / 2**20
    assert member_mib > 25  # large enough that a copy in memory would show above the noise
    plain_mib, plain_clips = peak_rss_mib(big_inputs["plain"])
    figures = [f"member {member_mib:.1f} MiB; plain file peak RSS {plain_mib:.1f} MiB"]
    for name in ("tar", "tar.gz", "zip deflated"):
        peak_mib, clips = peak_rss_mib(big_inputs[name])
        assert clips == plain_clips
        extra_mib = peak_mib - plain_mib
        figures.append(f"{name}: peak {peak_mib:.1f} MiB, {extra_mib:+.1f} MiB vs plain")
        # Reading the member whole into memory costs 2-3x its size; in place or spilled, about nothing.
        assert extra_mib < member_mib, figures
    print("; ".join(figures))
