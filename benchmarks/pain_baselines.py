"""Costs of two choices made for the Broomé 2022 baselines, each against the alternative, CPU:

1. the one-bias LSTM of VGG+LSTM (``kinetoscope.layers.lstm.LSTM``, Keras's parameter count, a Python loop
   over the 10 steps) vs ``torch.nn.LSTM`` (fused kernel, two biases) at the model's size: input 4096,
   512 units, 10 steps, batch 16 — forward + backward;
2. I3D with TensorFlow SAME padding (``padding="tf_same"``, needed to reproduce the Kinetics checkpoints)
   vs static padding — forward of one 10 x 224² clip (§3.3's input).

Each row: best of ``--repeats`` interleaved runs, and the ratio.

    .venv/bin/python benchmarks/pain_baselines.py [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from kinetoscope.layers.lstm import LSTM
from kinetoscope.models import create_model


def best_of(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - start)
    return [min(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    x = torch.randn(16, 10, 4096)
    ours, fused = LSTM(4096, 512), nn.LSTM(4096, 512, batch_first=True)

    def step(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            module.zero_grad(set_to_none=True)
            fn(x).square().mean().backward()
        return run

    lstm_ours, lstm_torch = best_of([step(ours, ours), step(fused, lambda t: fused(t)[0])], args.repeats)

    clip = torch.randn(1, 3, 10, 224, 224)
    static = create_model("i3d", 2, temporal_strides=(2, 2, 2)).eval()
    same = create_model("i3d", 2, temporal_strides=(2, 2, 2), padding="tf_same").eval()
    same.load_state_dict(static.state_dict())
    with torch.no_grad():
        i3d_static, i3d_same = best_of([lambda: static(clip), lambda: same(clip)], args.repeats)

    print(f"{torch.get_num_threads()} thread(s), best of {args.repeats}")
    print(f"{'case':<44} {'ours s':>8} {'alt. s':>8} {'ratio':>6}")
    print(f"{'LSTM 4096->512, 16x10, fwd+bwd (vs nn.LSTM)':<44} {lstm_ours:>8.3f} {lstm_torch:>8.3f} "
          f"{lstm_ours / lstm_torch:>6.2f}")
    print(f"{'I3D 10x224², fwd, tf_same (vs static pad)':<44} {i3d_same:>8.3f} {i3d_static:>8.3f} "
          f"{i3d_same / i3d_static:>6.2f}")


if __name__ == "__main__":
    main()
