"""Benchmark: TAdaConv2d against a per-sample grouped convolution and a plain Conv2d, and TAda2D-R50
against R2D-R50 (inference time, training-step time, parameters, FLOPs), all measured in this one process.

    python bench/tadaconv.py [--repeats 7] [--train-repeats 5] [--threads 2] [--skip-layer] [--skip-train]

Prints ratios against the baseline measured in the same run; never used as a test threshold.
The compared variants run alternately (R2D, TAda2D, R2D, ...) so that load from other processes hits
them alike; each figure is the median over the runs, and ``pair`` is the median of the ratios of
neighbouring runs, which drifting load disturbs least. The two figures of issue 14 are printed last:

* inference: forward of one 8x224x224 clip (batch 1) under ``torch.inference_mode``, eval mode,
  stored channels-last as extraction hands clips to the model (``extract.channels_last``, the
  default); both models on contiguous memory are timed too;
* training step: forward, cross-entropy, backward and an AdamW step on a batch of 8 clips of
  8x112x112, train mode, stored channels-last as the fine-tuning loader gives them
  (``clips_to_tensor``), after four untimed steps each (the first steps run 1.5-2x slower).

Both models' inference uses the exact fast path (``TAda2D.set_fast_inference``, the default:
every BN folded into its conv or into eq. 7's filter, and TAda2D's own rewrites); the plain paths
are timed too, to show what the rewrites buy (ratios against the fast R2D). The load average (``os.getloadavg``, as
``uptime`` prints it) is printed before and after, since the machine is shared.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts matmuls and convolutions
at 2 FLOPs per multiply-add and ignores elementwise work (the input scaling, the temporal pooling,
BN); the paper's GFLOPs are multiply-adds, so both are printed.
"""

import argparse
import os
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
from runstate.runtime import retain_freed_memory  # noqa: E402

# Paper figures for ResNet-50 with a 400-class head, as quoted in the project's issue 3: model sizes
# 24.3M (R2D) and 27.5M (TAda2D), and TAdaConv's cost over R2D (Table 2: +3.2M params, +0.02 GFLOPs).
PAPER_R2D_PARAMS_M = 24.3
PAPER_TADA2D_PARAMS_M = 27.5
PAPER_EXTRA_GFLOPS = 0.02


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return "load average: " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def time_runs(functions: dict[str, Callable[[], object]], repeats: int,
              cpu_samples: dict[str, list[float]] | None = None, warmups: int = 1) -> dict[str, list[float]]:
    """Wall times (s) of each function over ``repeats`` runs, after ``warmups`` untimed calls each,
    all interleaved.

    ``cpu_samples``, when given, receives the process CPU time (s, all threads) of the same runs:
    time spent descheduled by other processes does not count there, spinning threads do.
    """
    for _ in range(warmups):
        for function in functions.values():
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            function()
            samples[name].append(time.perf_counter() - start)
            if cpu_samples is not None:
                cpu_samples.setdefault(name, []).append(time.process_time() - start_cpu)
    return samples


def pair_ratio(runs: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over the repeats of ``name``'s time divided by the baseline's time in the same round."""
    return statistics.median(value / base for value, base in zip(runs[name], runs[baseline]))


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


def route_inputs(model: torch.nn.Module, video: torch.Tensor) -> list[torch.Tensor]:
    """The ``(B, T, C)`` descriptors each route function reads in one inference pass, in block order."""
    routes = [block.route for stage in model.stages for block in stage]
    recorded: list[torch.Tensor] = []
    for route in routes:  # an instance attribute shadows the class's method for this one pass
        route.from_frame_rows = (lambda rows, route=route: recorded.append(rows)
                                 or type(route).from_frame_rows(route, rows))
    fast = model.layer1[0].fast_inference
    model.set_fast_inference(False)  # the plain path is the one that calls from_frame_rows
    try:
        with torch.inference_mode():
            model(video)
    finally:
        model.set_fast_inference(fast)
        for route in routes:
            del route.from_frame_rows
    return recorded


def move_off_identity_(model: torch.nn.Module, video: torch.Tensor) -> float:
    """Moves a fresh TAda2D's calibration and temporal aggregation off the identity; returns max |alpha - 1|.

    At initialisation alpha is exactly 1 and BN2 is zero, which a trained model is not. Each route's
    last conv is drawn at random and scaled so that ``alpha - 1`` has a standard deviation of 0.05
    on the descriptors that route reads at the identity (``alpha - 1`` is linear in that weight), and
    BN2's scale is set to 0.1. Only the values change, not the work done.
    """
    routes = [block.route for stage in model.stages for block in stage]
    with torch.no_grad():
        for route, rows in zip(routes, route_inputs(model, video)):
            route.conv_expand.weight.normal_()
            spread = (route.from_frame_rows(rows) - 1).std().item()
            route.conv_expand.weight.mul_(0.05 / max(spread, 1e-12))
        for stage in model.stages:
            for block in stage:
                block.pool_bn.weight.fill_(0.1)
        return max((route.from_frame_rows(rows) - 1).abs().max().item()
                   for route, rows in zip(routes, route_inputs(model, video)))


def bench_models(repeats: int, num_frames: int, size: int) -> tuple[float, float, float]:
    """Inference of one clip, R2D-R50 vs TAda2D-R50 (fast and plain path), the clip channels-last as
    extraction feeds it (``extract.channels_last``, the default), and both models on contiguous
    memory too.

    Returns the TAda2D/R2D ratios of the median wall times and of the median CPU times
    (channels-last), and of the median wall times on contiguous memory.
    """
    torch.manual_seed(0)
    tada = build_model("tada2d", depth=50, heads={"label": 400}, num_frames=num_frames).eval()
    r2d = build_model("tsn", depth=50, heads={"label": 400}, num_frames=num_frames).eval()
    # (B, 3, T, H, W) stored as (B, T, H, W, 3), as the decoding workers hand clips over
    video = torch.randn(1, 3, num_frames, size, size).contiguous(memory_format=torch.channels_last_3d)
    contiguous_video = video.contiguous()
    alpha_spread = move_off_identity_(tada, video)
    plain_tada = build_model("tada2d", depth=50, heads={"label": 400}, num_frames=num_frames).eval()
    plain_tada.load_state_dict(tada.state_dict())
    plain_tada.set_fast_inference(False)
    # R2D without its inference rewrite (the BNs folded into the convs): the baseline before it
    plain_r2d = build_model("tsn", depth=50, heads={"label": 400}, num_frames=num_frames).eval()
    plain_r2d.load_state_dict(r2d.state_dict())
    plain_r2d.set_fast_inference(False)
    with torch.inference_mode():
        fast_feature, plain_feature = tada(video)[1], plain_tada(video)[1]
        cpu_runs: dict[str, list[float]] = {}
        runs = time_runs({"R2D-R50": lambda: r2d(video), "TAda2D-R50": lambda: tada(video),
                          "TAda2D-R50 plain path": lambda: plain_tada(video),
                          "R2D-R50 plain path": lambda: plain_r2d(video),
                          "R2D-R50 contiguous": lambda: r2d(contiguous_video),
                          "TAda2D-R50 contiguous": lambda: tada(contiguous_video)},
                         repeats, cpu_runs, warmups=3)
    times = {name: statistics.median(values) for name, values in runs.items()}
    cpu_times = {name: statistics.median(values) for name, values in cpu_runs.items()}
    params = {name: sum(p.numel() for p in model.parameters()) for name, model in
              (("R2D-R50", r2d), ("TAda2D-R50", tada))}
    flops = {"R2D-R50": count_flops(r2d, video), "TAda2D-R50": count_flops(tada, video)}
    paper_params = {"R2D-R50": PAPER_R2D_PARAMS_M, "TAda2D-R50": PAPER_TADA2D_PARAMS_M}

    print(f"\nInference: ResNet-50, 400 classes, {num_frames}x{size}x{size}, batch 1, channels-last (and "
          f"contiguous), torch.inference_mode, median of {repeats} ({load_average()})")
    print(f"  {'model':22s} {'ms':>8s} {'x R2D':>6s} {'pair':>6s} {'cpu ms':>8s} {'x R2D':>6s} {'params M':>9s} "
          f"{'paper M':>8s} {'GFLOPs':>8s} {'GMACs':>7s}")
    for name in runs:
        size_name = "TAda2D-R50" if name.startswith("TAda2D") else "R2D-R50"
        baseline = "R2D-R50 contiguous" if name.endswith("contiguous") else "R2D-R50"
        ratio, cpu_ratio = times[name] / times[baseline], cpu_times[name] / cpu_times[baseline]
        print(f"  {name:22s} {times[name] * 1e3:8.1f} {ratio:6.3f} {pair_ratio(runs, name, baseline):6.3f} "
              f"{cpu_times[name] * 1e3:8.1f} {cpu_ratio:6.3f} {params[size_name] / 1e6:9.3f} "
              f"{paper_params[size_name]:8.1f} {flops[size_name] / 1e9:8.2f} {flops[size_name] / 2e9:7.2f}")
    extra_params = (params["TAda2D-R50"] - params["R2D-R50"]) / 1e6
    extra_gmacs = (flops["TAda2D-R50"] - flops["R2D-R50"]) / 2e9
    print(f"  TAda2D - R2D: +{extra_params:.2f} M params (paper +3.2 M), +{extra_gmacs:.3f} GMACs "
          f"(paper +{PAPER_EXTRA_GFLOPS} GFLOPs)")
    relative = ((fast_feature - plain_feature).abs().max() / plain_feature.abs().max()).item()
    print(f"  TAda2D weights moved off the identity: |alpha - 1| up to {alpha_spread:.2f}, BN2 scale 0.1; "
          f"fast vs plain path: max |feature difference| / max |feature| = {relative:.1e}")
    print(f"  channels-last / contiguous: R2D {times['R2D-R50'] / times['R2D-R50 contiguous']:.3f}, "
          f"TAda2D {times['TAda2D-R50'] / times['TAda2D-R50 contiguous']:.3f}")
    return (times["TAda2D-R50"] / times["R2D-R50"], cpu_times["TAda2D-R50"] / cpu_times["R2D-R50"],
            times["TAda2D-R50 contiguous"] / times["R2D-R50 contiguous"])


def bench_training(repeats: int, batch: int, num_frames: int, size: int) -> tuple[float, float]:
    """One optimisation step, R2D-R50 vs TAda2D-R50; returns the wall and CPU TAda2D/R2D ratios (medians)."""
    torch.manual_seed(0)
    models = {"R2D-R50": build_model("tsn", depth=50, heads={"label": 400}, num_frames=num_frames),
              "TAda2D-R50": build_model("tada2d", depth=50, heads={"label": 400}, num_frames=num_frames)}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.02)
                  for name, model in models.items()}
    # (B, 3, T, H, W) stored as (B, T, H, W, 3), as clips_to_tensor gives the loader's clips
    video = torch.randn(batch, 3, num_frames, size, size).contiguous(memory_format=torch.channels_last_3d)
    labels = torch.randint(0, 400, (batch,))

    def step(name: str) -> None:
        model, optimizer = models[name].train(), optimizers[name]
        logits, _ = model(video)
        loss = F.cross_entropy(logits["label"], labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    cpu_runs: dict[str, list[float]] = {}
    # Four untimed steps each: the first steps of a model run 1.5-2x slower than the steady state
    # (oneDNN creates its primitives, AdamW its state, the heap grows to the step's peak).
    runs = time_runs({name: (lambda name=name: step(name)) for name in models}, repeats, cpu_runs, warmups=4)
    times = {name: statistics.median(values) for name, values in runs.items()}
    cpu_times = {name: statistics.median(values) for name, values in cpu_runs.items()}
    print(f"\nTraining step: ResNet-50, batch {batch} x {num_frames}x{size}x{size} channels-last, forward + "
          f"backward + AdamW, "
          f"median of {repeats} ({load_average()})")
    print(f"  {'model':22s} {'s':>8s} {'x R2D':>6s} {'pair':>6s} {'cpu s':>8s} {'x R2D':>6s}")
    for name in runs:
        print(f"  {name:22s} {times[name]:8.2f} {times[name] / times['R2D-R50']:6.3f} "
              f"{pair_ratio(runs, name, 'R2D-R50'):6.3f} {cpu_times[name]:8.2f} "
              f"{cpu_times[name] / cpu_times['R2D-R50']:6.3f}")
    return times["TAda2D-R50"] / times["R2D-R50"], cpu_times["TAda2D-R50"] / cpu_times["R2D-R50"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed inference runs per model (layer: 4x this)")
    parser.add_argument("--train-repeats", type=int, default=5, help="timed training steps per model")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="inference frame size")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=112)
    parser.add_argument("--skip-layer", action="store_true", help="skip the one-layer comparison")
    parser.add_argument("--skip-train", action="store_true", help="skip the training-step comparison")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {load_average()}")
    if not args.skip_layer:
        bench_layer(args.repeats)
    inference_ratios = bench_models(args.repeats, args.frames, args.size)
    train_ratios = None
    if not args.skip_train:
        train_ratios = bench_training(args.train_repeats, args.train_batch, args.frames, args.train_size)
    print(f"\nTAda2D-R50 / R2D-R50 (medians: wall time, CPU time), {torch.get_num_threads()} threads, "
          f"{load_average()}:")
    print(f"  inference forward, 1x3x{args.frames}x{args.size}^2, channels-last: {inference_ratios[0]:.3f}, "
          f"{inference_ratios[1]:.3f} (aim <= 1.05); contiguous: {inference_ratios[2]:.3f}")
    if train_ratios is not None:
        print(f"  training step, {args.train_batch}x3x{args.frames}x{args.train_size}^2: {train_ratios[0]:.3f}, "
              f"{train_ratios[1]:.3f} (aim <= 1.10)")


if __name__ == "__main__":
    retain_freed_memory()  # as pipeline.py does before any stage
    main()
