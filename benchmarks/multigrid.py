"""Multigrid vs a fixed batch shape: one training epoch of the same clips, CPU (Stergiou 2021 §4.4.1).

Both runs see ``--clips`` clips of ``--frames`` x ``--size``² once (SGD steps, forward + backward) on the same
model; the multigrid run uses the long + short cycle plan of ``kinetoscope.data.multigrid`` (shapes with
``b·t·h·w = B·T·H·W``, resized in the batch as the training callback does). Printed: wall time, clips/s,
iterations, the plan's input volume relative to the base, and the speed-up. Multigrid's promise (Wu et al.
2020) is fewer, cheaper passes per epoch at equal volume per iteration.

    .venv/bin/python benchmarks/multigrid.py [--model x3d_xs] [--clips 128] [--batch 4] [--frames 16]
        [--size 112] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kinetoscope.data.multigrid import multigrid_plan, multigrid_resize
from kinetoscope.models import create_model


def run_epoch(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor, plan) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    start_index = 0
    started = time.perf_counter()
    for step in plan:
        rows = slice(start_index, start_index + step.batch)
        start_index += step.batch
        x = multigrid_resize(clips[rows], step.frames, step.size)
        loss = F.cross_entropy(model(x), labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="x3d_xs")
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clips = torch.rand(args.clips, 3, args.frames, args.size, args.size)
    labels = torch.randint(0, 10, (args.clips,))
    size = (args.size, args.size)
    plans = {"fixed": multigrid_plan(args.clips, args.batch, args.frames, size, "none"),
             "long+short": multigrid_plan(args.clips, args.batch, args.frames, size, "long+short")}
    base_volume = args.batch * args.frames * args.size**2
    model = create_model(args.model, num_classes=10)
    model.train()
    run_epoch(model, clips[: args.batch * 2], labels[: args.batch * 2], plans["fixed"][:2])  # warm-up
    times = {name: run_epoch(model, clips, labels, plan) for name, plan in plans.items()}
    print(f"{args.model}, {args.clips} clips of {args.frames}x{args.size}², base batch {args.batch}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"{'schedule':<12} {'iters':>6} {'volume/iter':>12} {'seconds':>9} {'clips/s':>9}")
    for name, plan in plans.items():
        volume = sum(s.batch * s.frames * s.size[0] * s.size[1] for s in plan) / len(plan) / base_volume
        print(f"{name:<12} {len(plan):>6} {volume:>12.2f} {times[name]:>9.2f} {args.clips / times[name]:>9.1f}")
    print(f"multigrid speed-up: {times['fixed'] / times['long+short']:.2f}x")


if __name__ == "__main__":
    main()
