"""SoftPool vs average pooling: forward + backward on the same tensor, CPU.

Shapes: MTConv's spatial (1, 2, 2) SoftPool on an X3D-stage-sized activation, a cubic 2x2x2 window, and a
2D 2x2 window; plus the two backward modes (exact autograd gradient, the author's ``g * w`` gradient) and,
for reference, overlapping windows (the ``unfold`` path). Each row: best-of-``--repeats`` wall time of one
forward + backward (interleaved with the average-pool run so machine load hits both alike) and the ratio.
Goal: SoftPool <= 3x average pooling.

    .venv/bin/python benchmarks/softpool.py [--repeats 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kinetoscope.layers.softpool import soft_pool2d, soft_pool3d


def step_time(pool: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> float:
    leaf = x.clone().requires_grad_()
    start = time.perf_counter()
    out = pool(leaf)
    out.backward(torch.ones_like(out))
    return time.perf_counter() - start


def compare(
    avg: Callable[[torch.Tensor], torch.Tensor], soft: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
    repeats: int,
) -> tuple[float, float]:
    step_time(avg, x), step_time(soft, x)  # warm-up
    avg_times, soft_times = [], []
    for _ in range(repeats):
        avg_times.append(step_time(avg, x))
        soft_times.append(step_time(soft, x))
    return min(avg_times), min(soft_times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x3 = torch.randn(8, 54, 16, 64, 64)  # MTNet stage-1 inner width at 16 x 128² input
    x3c = torch.randn(8, 32, 16, 56, 56)
    x2 = torch.randn(32, 64, 112, 112)
    cases = [
        ("3d (1,2,2) autograd", x3, lambda t: F.avg_pool3d(t, (1, 2, 2)), lambda t: soft_pool3d(t, (1, 2, 2))),
        ("3d (1,2,2) grad=weights", x3, lambda t: F.avg_pool3d(t, (1, 2, 2)),
         lambda t: soft_pool3d(t, (1, 2, 2), grad="weights")),
        ("3d (2,2,2) autograd", x3c, lambda t: F.avg_pool3d(t, 2), lambda t: soft_pool3d(t, 2)),
        ("2d (2,2) autograd", x2, lambda t: F.avg_pool2d(t, 2), lambda t: soft_pool2d(t, 2)),
        ("3d (1,3,3)/s(1,2,2) overlap", x3c, lambda t: F.avg_pool3d(t, (1, 3, 3), (1, 2, 2)),
         lambda t: soft_pool3d(t, (1, 3, 3), (1, 2, 2))),
    ]
    print(f"threads={torch.get_num_threads()}  repeats={args.repeats}  (best-of, forward+backward)")
    print(f"{'case':32s} {'shape':>22s} {'avg ms':>9s} {'soft ms':>9s} {'ratio':>7s}")
    for name, x, avg, soft in cases:
        avg_s, soft_s = compare(avg, soft, x, args.repeats)
        shape = "x".join(map(str, x.shape))
        print(f"{name:32s} {shape:>22s} {avg_s * 1e3:9.1f} {soft_s * 1e3:9.1f} {soft_s / avg_s:6.2f}x")


if __name__ == "__main__":
    main()
