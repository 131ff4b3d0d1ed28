"""Benchmark: memory and time of extracting a video from an archive, against the same video as a plain file.

    python bench/archive_rss.py [--size-mb 170] [--repeats 3] [--checkout PATH]

Makes one large H.264 MP4 (640x360 noise frames, lossless, so that it is large for its length:
about 0.43 MB a frame), packs it into a ``.tar``, a ``.tar.gz``, a stored ``.zip`` and a deflated
``.zip``, and decodes it from each (and from the plain file) in a fresh subprocess, the way the
extract stage's decoding workers do: ``features.sources.list_sources`` then
``features.decode.ClipBatchDataset`` over the paper's clip grid (30 fps, 8 frames 8 apart,
stride 16, short side 128). Each child reports its peak resident memory (``VmHWM`` of
``/proc/self/status``), its resident memory once the modules are imported, and its wall time.

Printed per input: the median peak RSS, the median extra peak over the plain file (MiB, from
the runs of the same repeat), and the wall time as a ratio to the plain file. Runs alternate
between the inputs, ``--repeats`` times. ``--checkout`` measures another checkout of the
project (an older commit, say) on the same files. Prints figures; never a test threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.mp4 import write_mp4  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
FRAME_BYTES = 0.43e6  # lossless 640x360 noise, measured: bytes per frame of the MP4

# The measured child: decode every clip of one video as an extraction worker does; print one JSON line.
CHILD = """
import json, sys, time

def status_kib(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])

from features.decode import ClipBatch, ClipBatchDataset, ClipSampling
from features.sources import list_sources
imported_kib = status_kib("VmRSS")
start = time.perf_counter()
try:
    sources = list_sources(sys.argv[1])
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {str(error).splitlines()[0]}"}))
    sys.exit(0)
sampling = ClipSampling(fps=30.0, num_frames=8, interval_frames=8, stride_frames=16, short_side=128)
clips = 0
for item in ClipBatchDataset(sources, sampling, clips_per_chunk=32, batch_size=16):
    if not isinstance(item, ClipBatch):
        print(json.dumps({"error": item.reason}))
        sys.exit(0)
    clips += len(item.times_sec)
print(json.dumps({"peak_kib": status_kib("VmHWM"), "imported_kib": imported_kib, "clips": clips,
                  "seconds": time.perf_counter() - start}))
"""


def noise_frames(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)


def make_inputs(folder: Path, size_mb: float) -> dict[str, Path]:
    """The video and the archives holding it (member ``videos/big.mp4``)."""
    video = write_mp4(folder / "big.mp4", noise_frames(max(1, int(size_mb * 1e6 / FRAME_BYTES))), 30,
                      crf=0, preset="ultrafast")
    inputs = {"plain file": video}
    inputs["tar"] = folder / "big.tar"
    with tarfile.open(inputs["tar"], "w") as tar:
        tar.add(video, arcname="videos/big.mp4")
    inputs["tar.gz"] = folder / "big.tar.gz"
    with tarfile.open(inputs["tar.gz"], "w:gz", compresslevel=1) as tar:
        tar.add(video, arcname="videos/big.mp4")
    for name, method in (("zip stored", zipfile.ZIP_STORED), ("zip deflated", zipfile.ZIP_DEFLATED)):
        inputs[name] = folder / f"big-{method}.zip"
        with zipfile.ZipFile(inputs[name], "w", method, compresslevel=1 if method else None) as zip_file:
            zip_file.write(video, arcname="videos/big.mp4")
    return inputs


def measure(path: Path, checkout: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=checkout, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(checkout)}, timeout=900)
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or [f"exit code {result.returncode}"])[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=170.0, help="size of the video (MB)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per input, alternating")
    parser.add_argument("--checkout", default=str(REPO_ROOT), help="the project checkout to measure")
    args = parser.parse_args(argv)
    checkout = Path(args.checkout).resolve()

    with tempfile.TemporaryDirectory(prefix="archive-rss-") as folder:
        inputs = make_inputs(Path(folder), args.size_mb)
        member_mib = inputs["plain file"].stat().st_size / 2**20
        print(f"video: {member_mib:.1f} MiB; checkout {checkout}; temporary files in {tempfile.gettempdir()}")
        runs: dict[str, list[dict]] = {name: [] for name in inputs}
        for _ in range(args.repeats):
            for name, path in inputs.items():
                runs[name].append(measure(path, checkout))

    plain = runs["plain file"]
    if any("error" in run for run in plain):
        raise SystemExit(f"bench: the plain file failed: {plain}")
    print(f"{'input':14} {'peak RSS MiB':>13} {'extra vs plain MiB':>19} {'extra / video size':>19} "
          f"{'time vs plain':>14} {'clips':>6}")
    for name, results in runs.items():
        errors = [run["error"] for run in results if "error" in run]
        if errors:
            print(f"{name:14} failed: {errors[0]}")
            continue
        peaks = [run["peak_kib"] / 1024 for run in results]
        extra = [run["peak_kib"] / 1024 - base["peak_kib"] / 1024 for run, base in zip(results, plain)]
        ratio = [run["seconds"] / base["seconds"] for run, base in zip(results, plain)]
        print(f"{name:14} {statistics.median(peaks):13.1f} {statistics.median(extra):19.1f} "
              f"{statistics.median(extra) / member_mib:19.2f} {statistics.median(ratio):14.2f} "
              f"{results[0]['clips']:6d}")
    print(f"(RSS after imports, plain file: {statistics.median(r['imported_kib'] for r in plain) / 1024:.1f} MiB; "
          f"medians of {args.repeats} alternating runs)")


if __name__ == "__main__":
    main()
