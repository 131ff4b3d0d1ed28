"""Benchmark: TAdaConv2d against a per-sample grouped convolution and a plain Conv2d, and TAda2D-R50
against R2D-R50 (time, parameters, FLOPs), all measured in this one process.

    python bench/tadaconv.py [--repeats 5] [--threads N]

Prints ratios against the baseline measured in the same run; never used as a test threshold.
Times are medians over ``--repeats`` runs, the compared variants interleaved so that load from
other processes hits them alike. FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``,
which counts matmuls and convolutions at 2 FLOPs per multiply-add and ignores elementwise work
(the input scaling, the temporal pooling, BN); the paper's GFLOPs are multiply-adds, so both
are printed.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.build import build_model  # noqa: E402
from backbone.tadaconv import RouteFunction, TAdaConv2d  # noqa: E402

# Paper figures for ResNet-50 with a 400-class head, as quoted in the project's issue 3: model sizes
# 24.3M (R2D) and 27.5M (TAda2D), and TAdaConv's cost over R2D (Table 2: +3.2M params, +0.02 GFLOPs).
PAPER_R2D_PARAMS_M = 24.3
PAPER_TADA2D_PARAMS_M = 27.5
PAPER_EXTRA_GFLOPS = 0.02


def time_runs(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Wall times (s) of each function over ``repeats`` runs, after one warm-up call each, interleaved."""
    for function in functions.values():
        function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return samples


def median_times(functions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time (s) of each function; see ``time_runs``."""
    return {name: statistics.median(values) for name, values in time_runs(functions, repeats).items()}


def grouped_tadaconv(frames: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The official formulation: one calibrated kernel per frame, run as a grouped convolution.

    frames (N, Cin, H, W), alpha (N, Cin, 1, 1), weight (Cout, Cin, kh, kw) -> (N, Cout, H, W).
    """
    num_frames, in_channels, height, width = frames.shape
    # (N, 1, Cin, 1, 1) * (1, Cout, Cin, kh, kw) -> (N, Cout, Cin, kh, kw) -> (N*Cout, Cin, kh, kw)
    kernels = (alpha.view(num_frames, 1, in_channels, 1, 1) * weight.unsqueeze(0)).reshape(-1, in_channels,
                                                                                          *weight.shape[2:])
    # (N, Cin, H, W) -> (1, N*Cin, H, W), one group per frame
    padding = weight.shape[-1] // 2
    out = F.conv2d(frames.reshape(1, -1, height, width), kernels, padding=padding, groups=num_frames)
    return out.view(num_frames, -1, *out.shape[2:])  # (1, N*Cout, H, W) -> (N, Cout, H, W)


def bench_layer(repeats: int) -> None:
    channels, num_frames, size = 64, 8, 56
    torch.manual_seed(0)
    tada = TAdaConv2d(channels, channels, 3, padding=1).eval()
    route = RouteFunction(channels).eval()
    plain = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False).eval()
    plain.weight.data.copy_(tada.weight.data)
    frames = torch.randn(num_frames, channels, size, size)  # (B*T, C, H, W), B = 1
    alpha = 1.0 + 0.1 * torch.randn(num_frames, channels, 1, 1)  # (B*T, C, 1, 1)
    with torch.inference_mode():
        ours = tada.forward_folded(frames, alpha)
        grouped = grouped_tadaconv(frames, alpha, tada.weight)
        max_diff = (ours - grouped).abs().max().item()
        times = median_times(
            {
                "plain Conv2d": lambda: plain(frames),
                "TAdaConv2d (ours: scale Cin, then conv)": lambda: tada.forward_folded(frames, alpha),
                "TAdaConv2d + route function": lambda: tada.forward_folded(
                    frames, route.forward_folded(frames, num_frames)),
                "per-sample grouped conv (official form)": lambda: grouped_tadaconv(
                    frames, alpha, tada.weight),
            },
            repeats * 4,
        )
    base = times["plain Conv2d"]
    print(f"\nOne layer: C={channels}, k=3, T={num_frames}, {size}x{size}, batch 1 "
          f"(ours vs grouped max |diff| = {max_diff:.2e})")
    print(f"  {'op':44s} {'ms':>8s} {'x plain':>8s}")
    for name, seconds in times.items():
        print(f"  {name:44s} {seconds * 1e3:8.2f} {seconds / base:8.2f}")


def count_flops(model: torch.nn.Module, video: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(video)
    return counter.get_total_flops()


def bench_models(repeats: int, num_frames: int, size: int) -> None:
    torch.manual_seed(0)
    tada = build_model("tada2d", depth=50, heads={"label": 400}, num_frames=num_frames).eval()
    r2d = build_model("tsn", depth=50, heads={"label": 400}, num_frames=num_frames).eval()
    video = torch.randn(1, 3, num_frames, size, size)  # (B, 3, T, H, W)
    with torch.inference_mode():
        runs = time_runs({"R2D-R50": lambda: r2d(video), "TAda2D-R50": lambda: tada(video)}, repeats)
    times = {name: statistics.median(values) for name, values in runs.items()}
    best_ratio = min(runs["TAda2D-R50"]) / min(runs["R2D-R50"])
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in
              (("R2D-R50", r2d), ("TAda2D-R50", tada))}
    flops = {"R2D-R50": count_flops(r2d, video), "TAda2D-R50": count_flops(tada, video)}
    paper_params = {"R2D-R50": PAPER_R2D_PARAMS_M, "TAda2D-R50": PAPER_TADA2D_PARAMS_M}

    print(f"\nResNet-50, 400 classes, {num_frames}x{size}x{size}, batch 1, torch.inference_mode, "
          f"median of {repeats}")
    print(f"  {'model':12s} {'ms':>8s} {'x R2D':>6s} {'params M':>9s} {'paper M':>8s} "
          f"{'GFLOPs':>8s} {'GMACs':>7s}")
    for name in ("R2D-R50", "TAda2D-R50"):
        print(f"  {name:12s} {times[name] * 1e3:8.1f} {times[name] / times['R2D-R50']:6.3f} "
              f"{params[name] / 1e6:9.3f} {paper_params[name]:8.1f} {flops[name] / 1e9:8.2f} "
              f"{flops[name] / 2e9:7.2f}")
    extra_params = (params["TAda2D-R50"] - params["R2D-R50"]) / 1e6
    extra_gmacs = (flops["TAda2D-R50"] - flops["R2D-R50"]) / 2e9
    print(f"  TAda2D - R2D: +{extra_params:.2f} M params (paper +3.2 M), +{extra_gmacs:.3f} GMACs "
          f"(paper +{PAPER_EXTRA_GFLOPS} GFLOPs)")
    print(f"  time TAda2D / R2D: {times['TAda2D-R50'] / times['R2D-R50']:.3f} (medians), "
          f"{best_ratio:.3f} (fastest runs); aim <= 1.10 on CPU")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per model (layer: 4x this)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_layer(args.repeats)
    bench_models(args.repeats, args.frames, args.size)


if __name__ == "__main__":
    main()
