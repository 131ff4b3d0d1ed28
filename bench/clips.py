"""Benchmark: training clips in shuffled order, decoders kept open against released after each video.

    python bench/clips.py [--config configs/synthetic.yaml] [--clips 600] [--repeats 3]

Reads the fine-tuning clips of the config's training set (the demo's by default; the synthetic
set is rendered into the cache first if needed) in the shuffled order of an epoch, through
`backbone.clip_dataset.SegmentClips`, two ways, alternating in this one process:

* ``held``: every video's decord reader stays open (at most 64), the way the dataset read before;
* ``released``: the reader of the previous video is released before the next one is read
  (`VideoReader.release`), the way it reads now.

decord 0.6 decodes about three times the frames when a seek lands on a reader that sat idle
while others were used, so reopening is the cheaper of the two whenever consecutive clips come
from different videos, as shuffled training clips do. Printed per clip: wall and CPU
milliseconds (CPU counts decord's decoder threads too), medians over ``--repeats``, and the
ratio released / held. Both ways must give the same frames; the bench checks that on every clip.
Nothing here is a test threshold.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backbone.clip_dataset import ClipSampling, SegmentClips  # noqa: E402
from backbone.finetune import _segments_with_paths, head_columns  # noqa: E402
from configs.load import load_config  # noqa: E402
from data.dataset import load_dataset  # noqa: E402
from data.video import VideoReader  # noqa: E402
from runstate.runtime import retain_freed_memory  # noqa: E402


class HeldReaders(SegmentClips):
    """The previous policy: up to 64 readers stay open, none is released."""

    def _reader(self, path: str) -> VideoReader:
        reader = self._readers.pop(path, None) or VideoReader(path, short_side=self.sampling.decode_short_side)
        self._readers[path] = reader
        while len(self._readers) > 64:
            self._readers.popitem(last=False)
        return reader


def read_all(dataset: SegmentClips, order: np.ndarray) -> tuple[float, float, list[np.ndarray]]:
    """Wall and CPU seconds to read `order`'s items with fresh readers, and the clips."""
    dataset._readers = OrderedDict()
    wall, cpu = time.perf_counter(), time.process_time()
    clips = [dataset[int(index)][0].numpy() for index in order]
    return time.perf_counter() - wall, time.process_time() - cpu, clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "synthetic.yaml"))
    parser.add_argument("--clips", type=int, default=600, help="clips read per run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker
    cfg = load_config(args.config, [])
    annotations = load_dataset(cfg)
    ft = cfg.finetune
    segments = _segments_with_paths(annotations, cfg.dataset.train_subset)
    sampling = ClipSampling(cfg.model.num_frames, cfg.model.interval, ft.fps, train=True,
                            decode_short_side=ft.short_side_range[1], crop_size=ft.crop_size,
                            scale_range=tuple(ft.short_side_range), flip=ft.flip)
    columns = head_columns(annotations.classes)
    ways = {"held": HeldReaders(segments, columns, sampling, ft.clips_per_segment, cfg.runtime.seed),
            "released": SegmentClips(segments, columns, sampling, ft.clips_per_segment, cfg.runtime.seed)}
    order = np.random.default_rng(0).permutation(len(ways["held"]))[:args.clips]
    print(f"{len(order)} shuffled training clips of {segments['path'].nunique()} videos ({args.config}), "
          f"{cfg.model.num_frames} frames each; load average {os.getloadavg()[0]:.2f}")
    samples = {name: ([], []) for name in ways}
    for _ in range(args.repeats):
        frames = {}
        for name, dataset in ways.items():
            wall, cpu, frames[name] = read_all(dataset, order)
            samples[name][0].append(wall / len(order) * 1e3)
            samples[name][1].append(cpu / len(order) * 1e3)
        if not all(np.array_equal(a, b) for a, b in zip(frames["held"], frames["released"])):
            raise SystemExit("the two ways read different frames")
    medians = {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in samples.items()}
    for name, (wall, cpu) in medians.items():
        print(f"{name:9s} {wall:7.2f} ms/clip wall  {cpu:7.2f} ms/clip CPU  ({1e3 / wall:.0f} clips/s)")
    print(f"released / held: wall {medians['released'][0] / medians['held'][0]:.2f}  "
          f"CPU {medians['released'][1] / medians['held'][1]:.2f}  (same frames: yes; "
          f"load average after {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    retain_freed_memory()  # as pipeline.py does before any stage
    main()
