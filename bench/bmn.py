"""Benchmark: BMN training throughput, peak memory, inference and post-processing time per video,
the boundary-matching layer's single matmul against a per-proposal Python loop, and the window
fusion plus post-processing of one long EK100-style video.

    python bench/bmn.py [--scales 100 200] [--feature-dim 2048] [--batch-size 1] [--iterations 1]
                        [--warmup 0] [--threads N] [--device cpu|cuda]
                        [--loop-scale 40] [--loop-channels 64] [--skip-loop]
                        [--long-video-min 60] [--clip-step-sec 0.1333]

Hidden sizes are the paper's (256 / 128 / 512, 32 samples x 3 per bin). Each temporal scale runs in
its own spawned process so that its peak memory is its own: on CUDA ``torch.cuda.max_memory_allocated``
(tensors only); on CPU the process's resident-set high-water mark (``VmHWM``, else ``ru_maxrss``)
minus its value right after the model and the input batches were built, i.e. what training and
inference added on top of the model and the BM weights (the weights are reported separately). Inputs and
targets are random (targets from random ground truth through ``proposals.targets``); nothing is
read from disk. The long-video figure times ``fuse_window_predictions`` and ``postprocess_video`` on
random window outputs (no model) for a video of ``--long-video-min`` minutes with a clip every
``--clip-step-sec`` seconds (EK100: 8 frames at 60 fps), windows of the first scale, 50% overlap;
add the model's time per window (the scale rows' inference time) for a whole video.
Figures are printed, never used as test thresholds.
"""

import argparse
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proposals.bm_layer import BoundaryMatchingLayer  # noqa: E402
from proposals.bm_map import bm_valid_mask  # noqa: E402
from proposals.bmn import BMN  # noqa: E402
from proposals.inputs import fuse_window_predictions, rescaled_video_scores, sliding_windows  # noqa: E402
from proposals.losses import bmn_loss  # noqa: E402
from proposals.postprocess import postprocess_video  # noqa: E402
from proposals.targets import bmn_targets  # noqa: E402


def random_batch(rng, batch_size, feature_dim, temporal_scale, device):
    """Random features (B, C, T) and the targets of 1-3 random segments per item."""
    features = torch.randn(batch_size, feature_dim, temporal_scale, device=device)
    targets = []
    for _ in range(batch_size):
        segments = np.sort(rng.uniform(0, 1, size=(int(rng.integers(1, 4)), 2)), axis=1)
        targets.append(bmn_targets(segments, temporal_scale))
    gt_iou, gt_start, gt_end = (
        torch.tensor(np.stack([target[i] for target in targets]), dtype=torch.float32, device=device)
        for i in range(3)
    )
    return features, gt_iou, gt_start, gt_end


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_mib():
    """This process's resident-set high-water mark, MiB: ``VmHWM`` of /proc/self/status (the mm's own
    peak; ``ru_maxrss`` would also count the parent's pages at fork time), else ``ru_maxrss``."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_scale(temporal_scale, args, queue):
    """Runs in a spawned process: training windows/s, peak memory, inference and post-processing."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model = BMN(temporal_scale, args.feature_dim).to(device)
    build_s = time.perf_counter() - started
    bm_weights_mib = model.bm_layer.sample_weights.numel() * 4 / 2**20
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    valid = torch.from_numpy(bm_valid_mask(temporal_scale)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = [
        random_batch(rng, args.batch_size, args.feature_dim, temporal_scale, device)
        for _ in range(args.warmup + args.iterations)
    ]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = peak_rss_mib()

    train_s = 0.0
    for index, (features, gt_iou, gt_start, gt_end) in enumerate(batches):
        synchronize(device)
        step_start = time.perf_counter()
        confidence_map, start, end = model(features)
        loss = bmn_loss(confidence_map, start, end, gt_iou, gt_start, gt_end, valid, generator)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        synchronize(device)
        if index >= args.warmup:
            train_s += time.perf_counter() - step_start
    windows_per_s = args.iterations * args.batch_size / train_s

    model.eval()
    features = batches[0][0][:1]  # one video
    with torch.no_grad():
        synchronize(device)  # no warm-up: the training steps already ran these kernels
        infer_start = time.perf_counter()
        confidence_map, start, end = model(features)
        synchronize(device)
    inference_s = time.perf_counter() - infer_start
    post_start = time.perf_counter()
    scores = rescaled_video_scores(
        start[0].cpu().numpy(), end[0].cpu().numpy(), confidence_map[0].cpu().numpy(), 60.0
    )
    proposals = postprocess_video(scores, temporal_scale, top_k=100)
    post_s = time.perf_counter() - post_start

    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        peak_kind = "torch.cuda.max_memory_allocated"
    else:
        peak = peak_rss_mib() - rss_before
        peak_kind = "resident-set peak (VmHWM) increase over its value after model build"
    queue.put(
        dict(
            temporal_scale=temporal_scale,
            build_s=build_s,
            bm_weights_mib=bm_weights_mib,
            windows_per_s=windows_per_s,
            train_step_s=train_s / args.iterations,
            peak_mib=peak,
            peak_kind=peak_kind,
            inference_s=inference_s,
            postprocess_s=post_s,
            num_proposals=len(proposals),
        )
    )


def naive_bm_sampling(features, num_sample, num_sample_perbin, ratio):
    """Baseline: the BM layer's sampling proposal by proposal, interpolating on the fly.

    features (B, C, T) -> (B, C, N, T, T), a Python loop over the T (T + 1) / 2 valid cells.
    """
    batch, channels, steps = features.shape
    out = features.new_zeros(batch, channels, num_sample, steps, steps)
    # (B, C, T) -> (B, C, T+1): index T is zero
    padded = torch.cat([features, features.new_zeros(batch, channels, 1)], dim=2)
    point_index = torch.arange(num_sample * num_sample_perbin, dtype=torch.float64)
    for d in range(steps):
        for s in range(steps - d):
            region_start, region_end = s - ratio * (d + 1), s + d + ratio * (d + 1)
            positions = region_start + (region_end - region_start) * point_index / (len(point_index) - 1)
            lower = torch.floor(positions)
            frac = (positions - lower).to(features.dtype)
            lower = lower.long()
            upper = lower + 1
            # out-of-range taps read the zero column
            lower = torch.where((lower >= 0) & (lower < steps), lower, torch.full_like(lower, steps))
            upper = torch.where((upper >= 0) & (upper < steps), upper, torch.full_like(upper, steps))
            values = padded[:, :, lower] * (1 - frac) + padded[:, :, upper] * frac  # (B, C, N*K)
            # (B, C, N*K) -> (B, C, N, K) -> mean over K
            out[:, :, :, d, s] = values.view(batch, channels, num_sample, num_sample_perbin).mean(-1)
    return out


def bench_bm_layer(temporal_scale, channels, device):
    layer = BoundaryMatchingLayer(temporal_scale).to(device)
    features = torch.randn(1, channels, temporal_scale, device=device)
    with torch.no_grad():
        layer(features)
        synchronize(device)
        start = time.perf_counter()
        fast = layer(features)
        synchronize(device)
        matmul_s = time.perf_counter() - start
        start = time.perf_counter()
        slow = naive_bm_sampling(features, 32, 3, 0.5)
        synchronize(device)
        loop_s = time.perf_counter() - start
    max_difference = (fast - slow).abs().max().item()
    return matmul_s, loop_s, max_difference


def bench_long_video(minutes, clip_step_sec, temporal_scale):
    """Window fusion and post-processing of one long video from random window outputs (seconds)."""
    rng = np.random.default_rng(0)
    times = np.arange(0.5 * clip_step_sec, minutes * 60.0, clip_step_sec)  # (N,) clip centres
    windows = sliding_windows(len(times), temporal_scale, overlap=0.5)
    start = rng.uniform(size=(len(windows), temporal_scale))  # (W, T)
    end = rng.uniform(size=(len(windows), temporal_scale))  # (W, T)
    # (W, 2, D, T) with D = T
    maps = rng.uniform(size=(len(windows), 2, temporal_scale, temporal_scale)).astype(np.float32)
    fuse_start = time.perf_counter()
    scores = fuse_window_predictions(windows, start, end, maps, times, duration_sec=minutes * 60.0)
    fuse_s = time.perf_counter() - fuse_start
    post_start = time.perf_counter()
    proposals = postprocess_video(scores, temporal_scale, top_k=100)
    post_s = time.perf_counter() - post_start
    return len(times), len(windows), fuse_s, post_s, len(proposals)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[100, 200], help="temporal scales T")
    parser.add_argument("--feature-dim", type=int, default=2048, help="input feature channels")
    parser.add_argument("--batch-size", type=int, default=1, help="training windows per step")
    parser.add_argument("--iterations", type=int, default=1, help="timed training steps per scale")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed training steps first (CPU 0, CUDA 1)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--loop-scale", type=int, default=40, help="T of the matmul vs loop comparison")
    parser.add_argument("--loop-channels", type=int, default=64, help="channels of that comparison")
    parser.add_argument("--skip-loop", action="store_true", help="skip the per-proposal loop baseline")
    parser.add_argument("--long-video-min", type=float, default=60.0,
                        help="long-video figure: minutes (0: skip)")
    parser.add_argument("--clip-step-sec", type=float, default=8 / 60, help="long-video figure: clip spacing")
    args = parser.parse_args()
    if args.warmup is None:
        args.warmup = 0 if args.device == "cpu" else 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"BMN bench on {args.device} ({torch.get_num_threads()} CPU threads), "
        f"feature_dim={args.feature_dim}, "
        f"hidden 256/128/512, 32x3 samples, batch {args.batch_size}, {args.iterations} timed step(s)"
    )

    if not args.skip_loop:
        scale, channels = args.loop_scale, args.loop_channels
        matmul_s, loop_s, difference = bench_bm_layer(scale, channels, torch.device(args.device))
        print(
            f"BM layer T={scale}, C={channels}: matmul {matmul_s * 1e3:.1f} ms, "
            f"per-proposal loop {loop_s * 1e3:.0f} ms, loop / matmul = {loop_s / matmul_s:.1f}x "
            f"(max |difference| {difference:.1e})"
        )

    context = multiprocessing.get_context("spawn")
    header = (
        f"{'T':>4} {'build s':>8} {'BM weights MiB':>15} {'train win/s':>12} {'step s':>7} {'peak MiB':>9} "
        f"{'infer s/video':>14} {'post s/video':>13} {'proposals':>9}"
    )
    print(header)
    peak_kind = ""
    for scale in args.scales:
        queue = context.Queue()
        process = context.Process(target=measure_scale, args=(scale, args, queue))
        process.start()
        result = queue.get()
        process.join()
        peak_kind = result["peak_kind"]
        print(
            f"{scale:>4} {result['build_s']:>8.2f} {result['bm_weights_mib']:>15.0f} "
            f"{result['windows_per_s']:>12.3f} {result['train_step_s']:>7.2f} {result['peak_mib']:>9.0f} "
            f"{result['inference_s']:>14.3f} {result['postprocess_s']:>13.4f} {result['num_proposals']:>9}"
        )
        print(json.dumps(result), file=sys.stderr)
    print(f"peak memory: {peak_kind}")

    if args.long_video_min > 0:
        scale = args.scales[0]
        clips, windows, fuse_s, post_s, kept = bench_long_video(
            args.long_video_min, args.clip_step_sec, scale
        )
        print(
            f"long video, {args.long_video_min:g} min, {clips} clips, {windows} windows of T={scale}: "
            f"fusion {fuse_s:.2f} s, post-processing {post_s:.2f} s, {kept} proposals "
            f"(+ {windows} x the T={scale} inference time per window)"
        )


if __name__ == "__main__":
    main()
