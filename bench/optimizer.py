"""Benchmark: one optimizer step of the stages' optimizers, by torch's three implementations.

    python bench/optimizer.py [--repeats 30] [--threads 2] [--depth 10 --width 16]

The stages build AdamW / SGD (fine-tuning) and Adam (BMN) with ``foreach=True``: each op of the
update runs once over all the tensors. On the CPU torch's default is the per-tensor loop, which
is the baseline here; ``fused=True`` does the whole update in one kernel. Each is timed on the
parameters of a TAda2D (by default the demo's R10, width 16; EK100's 97 verb and 300 noun heads),
with fixed random gradients, the
three alternating in one process (medians, and ``pair``: the median of the ratios within a
round). The parameters after five steps are compared with the loop's: foreach is expected to be
equal bit for bit, fused only to rounding. Prints ratios; never used as a test threshold.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.build import build_model  # noqa: E402
from bench.tadaconv import load_average  # noqa: E402

OPTIMIZERS = {
    "AdamW (fine-tuning)": (torch.optim.AdamW, dict(lr=3e-3, weight_decay=0.05)),
    "SGD (fine-tuning)": (torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    "Adam (BMN)": (torch.optim.Adam, dict(lr=1e-3, weight_decay=1e-4)),
}
IMPLEMENTATIONS = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def model_parameters(depth: int, width: int) -> list[torch.nn.Parameter]:
    """A TAda2D's parameters with gradients drawn once (the same for every call)."""
    torch.manual_seed(0)
    params = list(build_model("tada2d", depth=depth, heads={"verb": 97, "noun": 300}, width=width).parameters())
    generator = torch.Generator().manual_seed(1)
    for param in params:
        param.grad = torch.randn(param.shape, generator=generator)
    return params


def largest_difference(params: list[torch.nn.Parameter], reference: list[torch.nn.Parameter]) -> float:
    """max |a - b| / max |b| over the tensors."""
    return max(((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item() for a, b in zip(params, reference))


def bench_optimizer(name: str, depth: int, width: int, repeats: int) -> None:
    optimizer_class, hyperparameters = OPTIMIZERS[name]
    params = {kind: model_parameters(depth, width) for kind in IMPLEMENTATIONS}
    optimizers = {kind: optimizer_class(params[kind], **hyperparameters, **options)
                  for kind, options in IMPLEMENTATIONS.items()}
    for _ in range(5):  # five steps each (the state exists from the first), then the comparison
        for optimizer in optimizers.values():
            optimizer.step()
    differences = {kind: largest_difference(params[kind], params["loop"]) for kind in IMPLEMENTATIONS}
    samples: dict[str, list[float]] = {kind: [] for kind in IMPLEMENTATIONS}
    for _ in range(repeats):
        for kind, optimizer in optimizers.items():
            start = time.perf_counter()
            optimizer.step()
            samples[kind].append(time.perf_counter() - start)
    loop = statistics.median(samples["loop"])
    print(f"  {name}")
    for kind, values in samples.items():
        pair = statistics.median(value / base for value, base in zip(values, samples["loop"]))
        equality = "bit for bit" if differences[kind] == 0 else f"max |diff| / max |value| {differences[kind]:.1e}"
        print(f"    {kind:8s} {statistics.median(values) * 1e3:7.2f} ms  x loop {statistics.median(values) / loop:5.2f}"
              f"  pair {pair:5.2f}  after 5 steps against the loop: {equality}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per implementation")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: leave the default)")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--width", type=int, default=16)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    count = len(model_parameters(args.depth, args.width))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, TAda2D-R{args.depth} width {args.width} "
          f"({count} tensors), medians of {args.repeats} ({load_average()})")
    for name in OPTIMIZERS:
        bench_optimizer(name, args.depth, args.width, args.repeats)
    print(f"({load_average()})")


if __name__ == "__main__":
    main()
