"""Benchmark: BMN's two formulations (reordered vs materialised sampled map) side by side; BMN training
throughput, peak memory, inference and post-processing time per video; the boundary-matching layer's single
matmul against a per-proposal Python loop; and the window fusion plus post-processing of one long
EK100-style video.

    python bench/bmn.py [--scales 100 200] [--feature-dim 2048] [--batch-size 1] [--iterations 1]
                        [--warmup 0] [--threads N] [--device cpu|cuda] [--formulation reordered|materialised]
                        [--compare-scales 100 200] [--compare-feature-dims 400 2048] [--compare-batch 8 2]
                        [--compare-repeats 1] [--materialised-max-gib 16] [--skip-compare-memory]
                        [--skip-compare] [--skip-scales] [--contraction-scale 100] [--contraction-batch 8]
                        [--loop-scale 40] [--loop-channels 64] [--skip-loop]
                        [--long-video-min 60] [--clip-step-sec 0.1333]

Hidden sizes are the paper's (256 / 128 / 512, 32 samples x 3 per bin), max_duration = T. Inputs and
targets are random (targets from random ground truth through ``proposals.targets``); nothing is read
from disk. Figures are printed, never used as test thresholds.

Formulations (``proposals.bmn``): for every T of ``--compare-scales`` (batch from ``--compare-batch``,
matched by position) and every input feature dim of ``--compare-feature-dims``:

- one spawned process builds both formulations with the same weights and alternates them: an untimed
  warm-up train step of the reordered model (the materialised one's first step is its own warm-up:
  it takes far longer than any one-off cost), then ``--compare-repeats`` rounds of (materialised train
  step, reordered train step), then the same for inference (forward of one window, no grad). A train
  step is forward + losses + backward + AdamW step. It prints medians and reordered / materialised.
  The first round is also checked against the exact result, the reordered model in float64 on the
  same batch with the same loss sampling (the tests show the two formulations equal in float64 to
  1e-10): the largest relative difference (max |a - b| / max |b|) of each formulation's float32
  confidence map, and of its gradients, the largest over the input's and every parameter's;
- unless ``--skip-compare-memory``, a process of its own for each formulation and for each of one
  train step and one inference forward reports the peak memory above the footprint before it (on
  CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on CPU, after glibc's
  ``malloc_trim`` has handed back the free heap, the resident-set high-water mark ``VmHWM``, reset
  through ``/proc/self/clear_refs``, minus ``VmRSS`` at the reset).

The materialised formulation is skipped (with the reason printed) where its estimated peak,
4 x the (B, 256, 32, D, T) float32 sampled map plus its dense BM weights, exceeds
``--materialised-max-gib``: on the 24 GiB, 2-core CPU machine T = 200 fits at batch 2, not at 8. The
defaults are the issue's configuration at T = 100 (batch 8) and the largest batch that fits at T = 200;
on 2 busy cores a materialised train step takes 50-90 s there, so the default comparison takes
several minutes per configuration. Measured on that machine (2 CPU threads shared with other
jobs, load average 3-8), one configuration per run (``--skip-scales --skip-loop --long-video-min 0
--contraction-scale 0 --compare-scales 100 --compare-feature-dims 400 --compare-batch 8`` and so on):

    T     feat  batch  train step s, mat / reord  inference s, mat / reord  train MiB, mat / reord  infer MiB
    100    400      8  52.3 / 6.00 = 0.115         1.64 / 0.440 = 0.269      10212 / 532             679 / 57
    100   2048      8  48.8 / 4.92 = 0.101         1.57 / 0.451 = 0.288      10206 / 532             680 / 59
    200    400      2  86.4 / 9.77 = 0.113         14.3 / 1.10  = 0.077      10486 / 710             2620 / 234
    200   2048      2  80.3 / 8.41 = 0.105         11.3 / 1.71  = 0.150      10488 / 709             2622 / 237
    200   2048      8  skipped (est. 40 GiB) / 12.3  - / 0.726                - / 2062                - / 241

The times of one round are noisy (other jobs share the cores); the train-step ratio was 0.10-0.15 in
every run. Largest relative difference from float64: confidence map 1.0e-7 to 1.2e-7 for both; gradients
1.5e-4 to 7.1e-4 materialised, 2.3e-4 to 1.5e-3 reordered. The worst gradient is, in both formulations
and nearly every run, the bias of a 2D convolution after the BM layers (``proposal_2d.4.bias``: a
float32 sum over B x D x T cells), a part the two share; the reordered formulation runs it on
channels-last memory, which sums in another order.

The contraction figure (``--contraction-scale``, ``--contraction-batch``) times the reordered
formulation's sampling step alone, ``(B, T*N, 512) -> (B, D*T, 512)``, three ways: the sparse CSR product
per batch item (what ``BoundaryMatchingConv`` does), one sparse product of the items side by side, and
a dense matmul with the (D*T, T*N) sampling matrix.

The per-scale table (``--scales``, at ``--feature-dim``, ``--batch-size``, ``--formulation``) runs each
temporal scale in its own spawned process so that its peak memory is its own, measured as in the
comparison above from right after the model and the input batches were built, i.e. what training and
inference added on top of the model and the BM buffers (their size is reported separately). The
long-video figure times ``fuse_window_predictions`` and ``postprocess_video`` on
random window outputs (no model) for a video of ``--long-video-min`` minutes with a clip every
``--clip-step-sec`` seconds (EK100: 8 frames at 60 fps), windows of the first scale, 50% overlap;
add the model's time per window (the scale rows' inference time) for a whole video.
"""

import argparse
import copy
import ctypes
import gc
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proposals.bm_layer import BoundaryMatchingConv, BoundaryMatchingLayer  # noqa: E402
from proposals.bm_map import bm_valid_mask  # noqa: E402
from proposals.bmn import BMN, FORMULATIONS  # noqa: E402
from proposals.inputs import fuse_window_predictions, rescaled_video_scores, sliding_windows  # noqa: E402
from proposals.losses import bmn_loss  # noqa: E402
from proposals.postprocess import postprocess_video  # noqa: E402
from proposals.targets import bmn_targets  # noqa: E402
from runstate.runtime import retain_freed_memory  # noqa: E402


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


def release_free_heap():
    """Hands the allocator's free heap pages back to the system (glibc ``malloc_trim``); returns whether
    it could. Without it, memory freed while the model was built stays resident and is reused unseen
    (a T = 200 reordered inference forward showed +12 MiB instead of its +239 MiB)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def reset_peak_rss():
    """Resets this process's ``VmHWM`` to its current resident set (Linux ``/proc/self/clear_refs``);
    returns the resident set then, MiB, or None where the reset is not available."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return None
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0  # kB
    return None


class PeakMemory:
    """Peak memory of what runs between ``start()`` and ``stop()``, MiB above the footprint at ``start()``."""

    def __init__(self, device):
        self.device = device

    def start(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "torch.cuda.max_memory_allocated above memory_allocated at the start"
            return
        trimmed = release_free_heap()
        self.baseline = reset_peak_rss()
        self.kind = "resident-set peak (VmHWM, reset through clear_refs) above VmRSS at the start" + (
            ", free heap released first (malloc_trim)" if trimmed else ", free heap not released: a lower bound")
        if self.baseline is None:  # no reset: the increase of the high-water mark, a lower bound
            self.baseline = peak_rss_mib()
            self.kind = "increase of the resident-set high-water mark (VmHWM); a lower bound"

    def stop(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.baseline
        return peak_rss_mib() - self.baseline


def measure_scale(temporal_scale, args, queue):
    """Runs in a spawned process: training windows/s, peak memory, inference and post-processing."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    model = BMN(temporal_scale, args.feature_dim, formulation=args.formulation).to(device)
    build_s = time.perf_counter() - started
    bm_weights_mib = sum(buffer.numel() * buffer.element_size() for buffer in model.buffers()) / 2**20
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    valid = torch.from_numpy(bm_valid_mask(temporal_scale)).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    batches = [
        random_batch(rng, args.batch_size, args.feature_dim, temporal_scale, device)
        for _ in range(args.warmup + args.iterations)
    ]
    peak = PeakMemory(device)
    peak.start()

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

    peak_mib, peak_kind = peak.stop(), peak.kind
    queue.put(
        dict(
            temporal_scale=temporal_scale,
            build_s=build_s,
            bm_weights_mib=bm_weights_mib,
            windows_per_s=windows_per_s,
            train_step_s=train_s / args.iterations,
            peak_mib=peak_mib,
            peak_kind=peak_kind,
            inference_s=inference_s,
            postprocess_s=post_s,
            num_proposals=len(proposals),
        )
    )


def materialised_estimate_gib(temporal_scale, batch_size, hidden_1d=256, num_sample=32):
    """Rough peak of a materialised train step, GiB: 4 sampled maps (B, H1, N, D, T) float32 (the map, its
    copy inside the strided Conv3d and their gradients; 10.5 GiB measured at T = 100, batch 8) plus the
    dense BM weights (T, N, D, T)."""
    sampled_map = batch_size * hidden_1d * num_sample * temporal_scale * temporal_scale * 4
    bm_weights = temporal_scale * num_sample * temporal_scale * temporal_scale * 4
    return (4 * sampled_map + bm_weights) / 2**30


def train_step(model, optimizer, batch, valid, generator):
    """Forward + losses + backward + optimizer step; returns the confidence map and the gradients
    ``{name: tensor}`` of the input and of every parameter (taken before the step)."""
    features, gt_iou, gt_start, gt_end = batch
    features = features.detach().requires_grad_(True)
    confidence_map, start, end = model(features)
    loss = bmn_loss(confidence_map, start, end, gt_iou, gt_start, gt_end, valid, generator)
    optimizer.zero_grad()
    loss.total.backward()
    gradients = {"input": features.grad, **{name: p.grad for name, p in model.named_parameters()}}
    optimizer.step()
    return confidence_map.detach(), gradients


def relative_difference(actual, expected):
    """``max |actual - expected| / max |expected|``."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def timed(function, device):
    synchronize(device)
    started = time.perf_counter()
    result = function()
    synchronize(device)
    return time.perf_counter() - started, result


def compare_timing(temporal_scale, feature_dim, batch_size, args, queue):
    """Runs in a spawned process: both formulations with the same weights, alternating; medians (s)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    models = {"reordered": BMN(temporal_scale, feature_dim, formulation="reordered").to(device)}
    run_materialised = materialised_estimate_gib(temporal_scale, batch_size) <= args.materialised_max_gib
    if run_materialised:
        models["materialised"] = BMN(temporal_scale, feature_dim, formulation="materialised").to(device)
        models["materialised"].load_state_dict(models["reordered"].state_dict())
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}
    # the same loss sampling for both: one generator each, seeded alike
    generators = {name: torch.Generator(device=device).manual_seed(0) for name in models}
    valid = torch.from_numpy(bm_valid_mask(temporal_scale)).to(device)
    rng = np.random.default_rng(0)
    batches = [random_batch(rng, batch_size, feature_dim, temporal_scale, device)
               for _ in range(args.compare_repeats + 1)]

    def step(name, batch):
        return timed(lambda: train_step(models[name], optimizers[name], batch, valid, generators[name]), device)

    # warm-up on a throwaway copy, so that both formulations enter the timed rounds with the same weights
    warm_up = copy.deepcopy(models["reordered"])
    train_step(warm_up, torch.optim.AdamW(warm_up.parameters(), lr=1e-4), batches[-1], valid,
               torch.Generator(device=device).manual_seed(1))
    del warm_up
    # The exact result of the first timed round, to judge both formulations' float32 rounding: the
    # reordered model in float64 (the tests show the formulations equal in float64 to 1e-10), on the
    # same batch; the targets stay float32 so that the loss draws the same random cells.
    reference = copy.deepcopy(models["reordered"]).double()
    features, *targets = batches[0]
    reference_map, reference_grads = train_step(reference, torch.optim.SGD(reference.parameters(), lr=0.0),
                                                (features.double(), *targets), valid,
                                                torch.Generator(device=device).manual_seed(0))
    del reference
    train_s = {name: [] for name in models}
    errors = {}  # formulation -> largest relative difference from the float64 result: map, gradients
    for repeat in range(args.compare_repeats):
        for name in reversed(list(models)):  # materialised first
            seconds, (confidence_map, gradients) = step(name, batches[repeat])
            train_s[name].append(seconds)
            if repeat == 0:
                gradient_error, worst = max((relative_difference(gradients[key].double(), reference_grads[key]), key)
                                            for key in reference_grads)
                errors[name] = dict(map=relative_difference(confidence_map.double(), reference_map),
                                    gradients=gradient_error, worst_gradient=worst)
            del confidence_map, gradients
    del reference_map, reference_grads

    features = batches[0][0][:1]  # one window
    infer_s = {name: [] for name in models}
    for model in models.values():
        model.eval()
    with torch.no_grad():
        timed(lambda: models["reordered"](features), device)  # warm-up
        for _ in range(args.compare_repeats):
            for name in reversed(list(models)):
                infer_s[name].append(timed(lambda name=name: models[name](features), device)[0])
    queue.put(dict(
        temporal_scale=temporal_scale, feature_dim=feature_dim, batch_size=batch_size,
        train_s={name: float(np.median(values)) for name, values in train_s.items()},
        infer_s={name: float(np.median(values)) for name, values in infer_s.items()},
        errors=errors,
    ))


def formulation_memory(temporal_scale, feature_dim, batch_size, formulation, phase, args, queue):
    """Runs in a spawned process: peak memory (MiB) of one train step (``phase="train"``) or of one
    inference forward of one window (``"inference"``). One phase per process: memory a train step
    freed stays resident (the allocator keeps it) and would hide what an inference after it needs."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = BMN(temporal_scale, feature_dim, formulation=formulation).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    valid = torch.from_numpy(bm_valid_mask(temporal_scale)).to(device)
    batch = random_batch(np.random.default_rng(0), batch_size, feature_dim, temporal_scale, device)
    peak = PeakMemory(device)
    if phase == "train":
        peak.start()
        train_step(model, optimizer, batch, valid, generator)
    else:
        model.eval()
        peak.start()
        with torch.no_grad():
            model(batch[0][:1])
    queue.put(dict(mib=peak.stop(), kind=peak.kind))


def in_spawned_process(target, *args):
    """Runs ``target(*args, queue)`` in a fresh process and returns what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def number(value, width, digits, style="f"):
    """``value`` right-aligned in ``width`` characters, or ``-`` when there is none."""
    return f"{value:>{width}.{digits}{style}}" if value is not None else f"{'-':>{width}}"


def compare_formulations(args):
    """Prints the two formulations' train-step and inference times, their ratio and peak memory."""
    if len(args.compare_batch) not in (1, len(args.compare_scales)):
        raise SystemExit("--compare-batch: give one batch size, or one per --compare-scales entry")
    batch_sizes = args.compare_batch if len(args.compare_batch) > 1 else args.compare_batch * len(args.compare_scales)
    print(
        f"formulations ({args.compare_repeats} alternating round(s), medians; ratio = reordered / materialised; "
        "train step = forward + losses + backward + AdamW; inference = forward of 1 window, no grad;\n"
        " map / grad: largest relative difference max|a - b| / max|b| of the float32 confidence map / of any\n"
        " gradient (input, each parameter) from the float64 result, first train step)"
    )
    header = (
        f"{'T':>4} {'feat':>5} {'batch':>5} | {'train s mat':>11} {'reord':>7} {'ratio':>6} | "
        f"{'infer s mat':>11} {'reord':>7} {'ratio':>6} | {'train MiB mat':>13} {'reord':>6} | "
        f"{'infer MiB mat':>13} {'reord':>6} | {'map mat':>8} {'reord':>7} | {'grad mat':>8} {'reord':>7} |"
    )
    print(header)
    kind = ""
    for temporal_scale, batch_size in zip(args.compare_scales, batch_sizes):
        estimate = materialised_estimate_gib(temporal_scale, batch_size)
        skip_materialised = estimate > args.materialised_max_gib
        for feature_dim in args.compare_feature_dims:
            timing = in_spawned_process(compare_timing, temporal_scale, feature_dim, batch_size, args)
            memory = {}  # formulation -> {"train_mib": ..., "infer_mib": ...}
            for formulation in FORMULATIONS:
                if args.skip_compare_memory or (formulation == "materialised" and skip_materialised):
                    continue
                for phase, key in (("train", "train_mib"), ("inference", "infer_mib")):
                    result = in_spawned_process(
                        formulation_memory, temporal_scale, feature_dim, batch_size, formulation, phase, args
                    )
                    memory.setdefault(formulation, {})[key] = result["mib"]
                    kind = result["kind"]

            train, infer, errors = timing["train_s"], timing["infer_s"], timing["errors"]
            row = [f"{temporal_scale:>4} {feature_dim:>5} {batch_size:>5} |"]
            for seconds, digits in ((train, 2), (infer, 3)):
                ratio = seconds["reordered"] / seconds["materialised"] if "materialised" in seconds else None
                row.append(f"{number(seconds.get('materialised'), 11, digits)} "
                           f"{number(seconds['reordered'], 7, digits)} {number(ratio, 6, 3)} |")
            for key in ("train_mib", "infer_mib"):
                row.append(f"{number(memory.get('materialised', {}).get(key), 13, 0)} "
                           f"{number(memory.get('reordered', {}).get(key), 6, 0)} |")
            for key in ("map", "gradients"):
                row.append(f"{number(errors.get('materialised', {}).get(key), 8, 1, 'e')} "
                           f"{number(errors['reordered'][key], 7, 1, 'e')} |")
            print(" ".join(row))
            print(json.dumps(dict(timing=timing, memory=memory)), file=sys.stderr)
        if skip_materialised:
            print(
                f"     T={temporal_scale}, batch {batch_size}: materialised skipped, its estimated peak "
                f"{estimate:.0f} GiB > --materialised-max-gib {args.materialised_max_gib:g}"
            )
    if kind:
        print(f"peak memory: {kind}")


def bench_contraction(temporal_scale, batch_size, repeats, device):
    """The reordered formulation's contraction ``(B, T*N, O) -> (B, D*T, O)`` (O = 512, N = 32) three ways,
    alternating, median seconds: the sparse CSR product per batch item (what ``BoundaryMatchingConv``
    does), one sparse product of the items side by side ``(T*N, B*O)``, and a dense matmul."""
    conv = BoundaryMatchingConv(temporal_scale).to(device)
    sampling, _ = conv.sparse_matrices(torch.float32)
    dense_sampling = sampling.to_dense()  # (D*T, T*N)
    num_taps, out_channels = dense_sampling.shape[1], 512
    projected = torch.randn(batch_size, num_taps, out_channels, device=device)  # (B, T*N, O)
    items_side_by_side = projected.permute(1, 0, 2).reshape(num_taps, batch_size * out_channels)  # (T*N, B*O)
    variants = {
        "sparse, per item": lambda: conv_product(projected, sampling),
        "sparse, items side by side": lambda: torch.mm(sampling, items_side_by_side),
        "dense matmul": lambda: torch.matmul(dense_sampling, projected),
    }
    seconds = {name: [] for name in variants}
    with torch.no_grad():
        for variant in variants.values():
            variant()  # warm-up
        for _ in range(repeats):
            for name, variant in variants.items():
                seconds[name].append(timed(variant, device)[0])
    return {name: float(np.median(values)) for name, values in seconds.items()}


def conv_product(projected, sampling):
    """``sampling @ projected[b]`` for every item, as ``BoundaryMatchingConv`` computes it."""
    out = projected.new_empty(projected.shape[0], sampling.shape[0], projected.shape[2])
    for item in range(projected.shape[0]):
        torch.addmm(out[item], sampling, projected[item], beta=0, out=out[item])
    return out


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
    parser.add_argument("--formulation", choices=FORMULATIONS, default="reordered", help="BMN of the per-scale table")
    parser.add_argument("--skip-scales", action="store_true", help="skip the per-scale table")
    parser.add_argument("--compare-scales", type=int, nargs="+", default=[100, 200],
                        help="formulation comparison: temporal scales T")
    parser.add_argument("--compare-feature-dims", type=int, nargs="+", default=[400, 2048],
                        help="formulation comparison: input feature dims")
    parser.add_argument("--compare-batch", type=int, nargs="+", default=[8, 2],
                        help="formulation comparison: batch size, one, or one per --compare-scales entry")
    parser.add_argument("--compare-repeats", type=int, default=1,
                        help="formulation comparison: timed rounds per formulation (medians)")
    parser.add_argument("--materialised-max-gib", type=float, default=16.0,
                        help="skip the materialised formulation where its estimated peak exceeds this")
    parser.add_argument("--skip-compare-memory", action="store_true",
                        help="formulation comparison: times only, no per-formulation memory processes")
    parser.add_argument("--skip-compare", action="store_true", help="skip the formulation comparison")
    parser.add_argument("--contraction-scale", type=int, default=100,
                        help="T of the sparse vs dense contraction figure (0: skip)")
    parser.add_argument("--contraction-batch", type=int, default=8, help="batch of that figure")
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
    print(f"BMN bench on {args.device} ({torch.get_num_threads()} CPU threads), hidden 256/128/512, 32x3 samples")

    if not args.skip_loop:
        scale, channels = args.loop_scale, args.loop_channels
        matmul_s, loop_s, difference = bench_bm_layer(scale, channels, torch.device(args.device))
        print(
            f"BM layer T={scale}, C={channels}: matmul {matmul_s * 1e3:.1f} ms, "
            f"per-proposal loop {loop_s * 1e3:.0f} ms, loop / matmul = {loop_s / matmul_s:.1f}x "
            f"(max |difference| {difference:.1e})"
        )

    if args.contraction_scale > 0:
        scale, batch = args.contraction_scale, args.contraction_batch
        seconds = bench_contraction(scale, batch, 3, torch.device(args.device))
        ours = seconds["sparse, per item"]
        print(f"reordered contraction (B, T*N, 512) -> (B, D*T, 512), T = D = {scale}, batch {batch}, "
              "median of 3 alternating: " + ", ".join(f"{name} {value:.3f} s ({value / ours:.1f}x)"
                                                     for name, value in seconds.items()))
    if not args.skip_compare:
        compare_formulations(args)

    if not args.skip_scales:
        print(f"per-scale table: {args.formulation} BMN, feature_dim={args.feature_dim}, batch {args.batch_size}, "
              f"{args.iterations} timed step(s)")
        header = (
            f"{'T':>4} {'build s':>8} {'BM buffers MiB':>15} {'train win/s':>12} {'step s':>7} {'peak MiB':>9} "
            f"{'infer s/video':>14} {'post s/video':>13} {'proposals':>9}"
        )
        print(header)
        peak_kind = ""
        for scale in args.scales:
            result = in_spawned_process(measure_scale, scale, args)
            peak_kind = result["peak_kind"]
            print(
                f"{scale:>4} {result['build_s']:>8.2f} {result['bm_weights_mib']:>15.1f} "
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
    retain_freed_memory()  # as pipeline.py does before any stage
    main()
