"""Benchmark: does decoding overlap the model in the extract stage? All figures from this one process.

    python bench/extract.py [--videos 8] [--workers 1] [--threads 0] [--repeats 3]
    python bench/extract.py --sweep 0,1,2,3 [--videos 8] [--repeats 3]
    python bench/extract.py ... extract.channels_last=false   (any config override)

On synthetic videos (configs/synthetic.yaml's set, ``--videos`` of its validation videos, generated
into the config's cache dir on first use) with the demo model (the config's ``model`` section,
random weights) and the config's extract settings, it measures:

* decode only: ``ClipBatchDataset`` in this process (decode each needed frame once, build the
  clips), in frames/s (the target frames the clips need) and clips/s;
* model only: the same clips, already decoded into memory, through ``ClipEncoder`` (uint8 to
  normalised float, forward pass), in clips/s;
* end to end: ``extract_videos`` (DataLoader decode workers, model, HDF5 writer), in clips/s,
  with ``--workers`` decoding processes and, for comparison, with none (a decoding thread of the
  main process, ``runtime.num_workers=0``);
* model only, beside a decoder: the same, while another process decodes the videos without
  pause, as a decode worker does during extraction. Where the machine's cores share one physical
  core (SMT siblings) or the host is oversubscribed, the model's own CPU time rises then (1.1-1.5x
  measured on the 2-vCPU dev box, even beside a pure Python loop), a cost no overlap can win back;
* end to end / model only: 1.0 means that decoding and writing are completely hidden; end to end
  / model beside a decoder is what is left once the cores' sharing is taken out: the pipeline's
  own overhead (waiting for batches, the HDF5 writes).

Model-only and end-to-end passes are interleaved ``--repeats`` times and the medians are used,
so that load from other processes hits them alike. On a shared machine wall-clock figures follow
the load (and Linux gives each session, not each process, its share of the CPUs, so a decode
worker then competes with the model). The CPU seconds of each process do not: the second block
prints them, and the ratio they imply on otherwise idle cores (model-only CPU time over that of
the busier process, main or worker; exact for one model thread). Prints figures; never a test
threshold.

``--sweep W,W,...`` instead runs the end-to-end extraction with each of those numbers of decode
workers, the model's torch threads chosen as the stage chooses them with ``runtime.num_threads=0``
(`runstate.runtime.model_threads`), interleaved ``--repeats`` times, and prints each setting's
clips/s against the best one's, and end to end / model only (and / model beside a decoder) at that
setting's thread count.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as pipeline.py: before torch loads OpenMP
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from configs.load import load_config  # noqa: E402
from data.dataset import load_dataset  # noqa: E402
from data.video import VideoReader  # noqa: E402
from features.decode import ClipBatch, ClipBatchDataset  # noqa: E402
from features.extract import clip_sampling, load_extraction_model, store_attrs  # noqa: E402
from features.loop import ClipEncoder, extract_videos  # noqa: E402
from features.sources import sources_from_table  # noqa: E402
from features.windows import clip_grid  # noqa: E402
from formats.feature_writer import FeatureWriter  # noqa: E402
from runstate.runtime import model_threads, retain_freed_memory  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Timing:
    """One measured pass: wall seconds, CPU seconds of this process and of its (joined) worker processes."""

    wall: float
    main_cpu: float
    worker_cpu: float


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(function) -> tuple[Timing, object]:
    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    result = function()
    timing = Timing(time.perf_counter() - wall, time.process_time() - cpu, children_cpu() - child)
    return timing, result


def decode_only(dataset: ClipBatchDataset) -> list[torch.Tensor]:
    """Decode every video in this process; the decoded clip batches (uint8)."""
    return [item.clips for item in dataset if isinstance(item, ClipBatch)]


def model_only(encoder: ClipEncoder, batches: list[torch.Tensor]) -> None:
    for clips in batches:
        encoder(clips)


def _decode_until(dataset: ClipBatchDataset, stop) -> None:
    """A competing decoder (run in a child process): decode the videos over and over until ``stop``."""
    torch.set_num_threads(1)
    while not stop.is_set():
        decode_only(dataset)


def model_beside_decoder(encoder: ClipEncoder, batches: list[torch.Tensor], dataset: ClipBatchDataset) -> Timing:
    """``model_only`` while another process decodes the same videos without pause, as a decode worker
    does during extraction: on a machine whose cores are shared (SMT siblings, an oversubscribed
    host) the model's own CPU time rises then, which no overlap can win back. End to end over this
    is the pipeline's own overhead."""
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    decoder = context.Process(target=_decode_until, args=(dataset, stop), daemon=True)
    decoder.start()
    try:
        time.sleep(0.2)  # the decoder past its start
        return timed(lambda: model_only(encoder, batches))[0]
    finally:
        stop.set()
        decoder.join()


def end_to_end(sources, sampling, encoder, attrs, cfg, num_workers: int) -> int:
    """A whole ``extract_videos`` run into a fresh temporary store, one decoder thread per reader
    as the stage runs it; returns the clips extracted."""
    with tempfile.TemporaryDirectory() as folder:
        with FeatureWriter(Path(folder) / "features.h5", attrs, dtype=cfg.extract.dtype) as writer:
            summary = extract_videos(sources, sampling, encoder, writer,
                                     clips_per_chunk=cfg.extract.clips_per_chunk,
                                     batch_size=cfg.extract.batch_size, num_workers=num_workers,
                                     decoder_threads=1, show_progress=False,
                                     decoder_nice=cfg.runtime.decoder_nice)
    if summary.failures:
        raise RuntimeError(f"bench: videos failed: {summary.failures}")
    return summary.num_clips


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(*(statistics.median(getattr(t, name) for t in timings)
                    for name in ("wall", "main_cpu", "worker_cpu")))


def sweep(worker_counts: list[int], sources, sampling, encoder, attrs, cfg, batches, num_clips: int,
          repeats: int, dataset: ClipBatchDataset) -> None:
    """End to end with each worker count at the default thread choice, interleaved; prints clips/s
    against the best setting and against model only at the same thread count."""
    default_threads = torch.get_num_threads()
    threads = {workers: model_threads(0, workers, "cpu") or default_threads for workers in worker_counts}
    walls: dict[int, list[float]] = {workers: [] for workers in worker_counts}
    model_walls: dict[int, list[float]] = {count: [] for count in set(threads.values())}
    beside_counts = {threads[workers] for workers in worker_counts if workers}
    beside_walls: dict[int, list[float]] = {count: [] for count in beside_counts}
    for _ in range(repeats):
        for count in model_walls:
            torch.set_num_threads(count)
            model_walls[count].append(timed(lambda: model_only(encoder, batches))[0].wall)
            if count in beside_counts:
                beside_walls[count].append(model_beside_decoder(encoder, batches, dataset).wall)
        for workers in worker_counts:
            torch.set_num_threads(threads[workers])
            timing, clips = timed(partial(end_to_end, sources, sampling, encoder, attrs, cfg, workers))
            assert clips == num_clips
            walls[workers].append(timing.wall)
    torch.set_num_threads(default_threads)
    rate = {workers: num_clips / statistics.median(values) for workers, values in walls.items()}
    best = max(rate.values())
    print(f"sweep over runtime.num_workers with runtime.num_threads=0 ({num_clips} clips, medians of {repeats}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}):")
    for workers in worker_counts:
        model_rate = num_clips / statistics.median(model_walls[threads[workers]])
        # "beside a decoder" is a decoding process: the counterpart of decode workers, not of the thread
        beside = ""
        if workers:
            beside_rate = num_clips / statistics.median(beside_walls[threads[workers]])
            beside = f", / model beside a decoder {rate[workers] / beside_rate:.2f}"
        print(f"  num_workers={workers}: {threads[workers]} model thread(s), {rate[workers]:7.1f} clips/s, "
              f"{rate[workers] / best:.2f} of the best; end to end / model only {rate[workers] / model_rate:.2f}"
              f"{beside}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "configs" / "synthetic.yaml"))
    parser.add_argument("--videos", type=int, default=8, help="validation videos to use (each 16-24 s)")
    parser.add_argument("--workers", type=int, default=1, help="decoding workers of the end-to-end run")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the model (0 = as the stage: the cores the workers leave)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved model-only / end-to-end passes")
    parser.add_argument("--sweep", default="", help="comma-separated worker counts to compare (see above)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, as pipeline.py takes them (e.g. extract.channels_last=false)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    cfg = load_config(args.config, ["extract.weights=random", "dataset.subsets=[validation]", *args.overrides])
    # The stage's choice: --threads, or torch's default capped at the cores the decode workers leave.
    threads = 0 if args.sweep else model_threads(args.threads, args.workers, "cpu")
    if threads:
        torch.set_num_threads(threads)
    videos = load_dataset(cfg).videos.head(args.videos)
    sources = sources_from_table(videos)
    extraction = load_extraction_model(cfg, paths=None)
    section = extraction.section
    sampling = clip_sampling(cfg, extraction)
    encoder = ClipEncoder(extraction.model, "cpu", channels_last=cfg.extract.channels_last)
    attrs = store_attrs(cfg, extraction)
    dataset = ClipBatchDataset(sources, sampling, cfg.extract.clips_per_chunk, cfg.extract.batch_size,
                               channels_last=encoder.channels_last)

    grids = [clip_grid(VideoReader(path).duration, sampling.fps, sampling.num_frames, sampling.interval_frames,
                       sampling.stride_frames) for path in videos["path"]]
    num_frames = sum(grid.frame_ids.size for grid in grids)
    decode, batches = timed(lambda: decode_only(dataset))
    num_clips = sum(len(clips) for clips in batches)
    encoder(batches[0])  # warm-up
    if args.sweep:
        sweep([int(count) for count in args.sweep.split(",")], sources, sampling, encoder, attrs, cfg, batches,
              num_clips, args.repeats, dataset)
        return

    passes: dict[str, list[Timing]] = {"model": [], "beside": [], "workers": [], "inline": []}
    for _ in range(args.repeats):
        passes["model"].append(timed(lambda: model_only(encoder, batches))[0])
        passes["beside"].append(model_beside_decoder(encoder, batches, dataset))
        timing, clips = timed(lambda: end_to_end(sources, sampling, encoder, attrs, cfg, args.workers))
        assert clips == num_clips
        passes["workers"].append(timing)
        passes["inline"].append(timed(lambda: end_to_end(sources, sampling, encoder, attrs, cfg, 0))[0])
    model, beside, workers, inline = (median_timing(passes[name]) for name in ("model", "beside", "workers", "inline"))

    print(f"extract bench: {len(sources)} videos, {num_clips} clips, {num_frames} frames at "
          f"{cfg.extract.fps:g} fps, short side {cfg.extract.short_side}; model {section['name']}-"
          f"r{section['depth']} width {section['width']}, T={section['num_frames']}, batch "
          f"{cfg.extract.batch_size}, {'channels-last' if encoder.channels_last else 'contiguous'}; "
          f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("wall clock (what this machine gave us):")
    print(f"  decode only (in process):       {num_frames / decode.wall:8.1f} frames/s "
          f"({num_clips / decode.wall:.1f} clips/s)")
    print(f"  model only (clips in memory):   {num_clips / model.wall:8.1f} clips/s")
    print(f"  model only, beside a decoder:   {num_clips / beside.wall:8.1f} clips/s   (another process "
          f"decoding meanwhile: {beside.main_cpu / model.main_cpu:.2f}x the model's CPU time)")
    for name, timing in ((f"{args.workers} decode worker(s)", workers), ("decode thread", inline)):
        print(f"  end to end, {name + ':':<19} {num_clips / timing.wall:8.1f} clips/s   "
              f"ratio to model only {model.wall / timing.wall:.2f}, to model beside a decoder "
              f"{beside.wall / timing.wall:.2f}")
    # CPU seconds do not depend on what else runs on the machine. With the worker on a core of its own,
    # the end-to-end time is that of the busier process (plus filling the pipeline at the start).
    print("CPU time (per process; on otherwise idle cores the busier process sets the pace):")
    print(f"  decode only: {decode.main_cpu:6.2f} s   model only: {model.main_cpu:6.2f} s")
    for name, timing in ((f"{args.workers} decode worker(s)", workers), ("decode thread", inline)):
        pace = max(timing.main_cpu, timing.worker_cpu / max(args.workers, 1))
        print(f"  end to end, {name + ':':<19} main {timing.main_cpu:6.2f} s, "
              f"workers {timing.worker_cpu:6.2f} s   ratio to model only {model.main_cpu / pace:.2f}")


if __name__ == "__main__":
    retain_freed_memory()  # as pipeline.py does before any stage
    main()
