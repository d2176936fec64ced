"""ConvLSTM training throughput on CPU: the fast layer against the straightforward cell.

Issue "The spine", item 4. One training step (forward + backward + SGD) of the 3-block ``convlstm``
model of Broomé 2022 §5.3 (64x64x20 grayscale, h=16, batch 16, 5 classes) with each ConvLSTM
implementation, in the same process, interleaved, median over repeats:

* ``baseline``  - ``reference_convlstm``: ConvLSTMCell (one Conv2d over cat([x_t, h_{t-1}])) stepped
                  with ``x[:, :, t]``, eager fp32 autograd;
* ``torch-cell`` - the layer with ``native=False``: one autograd Function, channels-last
                  convolutions, hand-written backward, but the cell's pointwise arithmetic in PyTorch
                  operations (in place, fused sigmoid/tanh backward kernels);
* ``fast``      - the layer as shipped: the same, with the cell in the fused C kernel of
                  ``kinetoscope.layers.native`` (one memory pass per step and direction).

Achieved GFLOP/s = FLOPs of one training step (torch.utils.flop_counter.FlopCounterMode, which
counts 2 FLOPs per multiply-add; convolutions and matmuls only) / step time, next to torch.mm's
GFLOP/s on 1024x1024 matrices measured in the same run.

    .venv/bin/python benchmarks/convlstm.py [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kinetoscope.layers import ConvLSTM, reference_convlstm
from kinetoscope.layers.native import cell_kernel
from kinetoscope.models import create_model


class _Stepper(nn.Module):
    """Runs ``function(layer, x)`` in place of ``layer`` (same parameters)."""

    def __init__(self, layer: ConvLSTM, function):
        super().__init__()
        self.layer, self.function = layer, function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(self.layer, x)


def build(variant: str, hidden: int) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("convlstm", num_classes=5, in_channels=1, hidden=hidden)
    for block in model.blocks:
        layer = block["convlstm"]
        layer.native = variant == "fast"
        if variant == "baseline":
            block["convlstm"] = _Stepper(layer, reference_convlstm)
    return model


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def matmul_gflops(size: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if cell_kernel(torch.float32, torch.device("cpu")) is None:
        print("WARNING: the fused cell kernel could not be built here; 'fast' runs the PyTorch cell")
    x = torch.randn(args.batch, 1, 20, 64, 64)
    y = torch.randint(0, 5, (args.batch,))

    variants = ["baseline", "torch-cell", "fast"]
    models = {name: build(name, args.hidden) for name in variants}
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=0.01) for name, m in models.items()}
    warmup = {}
    for name in variants:  # one warm-up step each
        start = time.perf_counter()
        train_step(models[name], optimizers[name], x, y)
        warmup[name] = time.perf_counter() - start
    flops = {}
    for name in variants:
        counter = FlopCounterMode(display=False)
        with counter:
            train_step(models[name], optimizers[name], x, y)
        flops[name] = counter.get_total_flops()
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu_times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits all variants alike
        for name in variants:
            start, start_cpu = time.perf_counter(), time.process_time()
            train_step(models[name], optimizers[name], x, y)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)
    mm = matmul_gflops()

    base = statistics.median(times["baseline"])
    base_cpu = statistics.median(cpu_times["baseline"])
    print(f"convlstm h={args.hidden}, batch {args.batch}, 1x20x64x64, threads={torch.get_num_threads()}, "
          f"{args.repeats} interleaved repeats (median); FLOPs: FlopCounterMode, 2 per multiply-add")
    print("step s = wall time of forward+backward+SGD; cpu s = process CPU time of the same step (less "
          "sensitive to other processes on a shared machine)")
    print(f"{'variant':<14}{'step s':>8}{'clips/s':>9}{'speed-up':>10}{'cpu s':>8}{'cpu speed-up':>14}"
          f"{'GFLOP/step':>12}{'GFLOP/s':>9}{'first step s':>14}")
    for name in variants:
        step, cpu = statistics.median(times[name]), statistics.median(cpu_times[name])
        print(f"{name:<14}{step:>8.3f}{args.batch / step:>9.1f}{base / step:>9.2f}x{cpu:>8.3f}"
              f"{base_cpu / cpu:>13.2f}x{flops[name] / 1e9:>12.2f}{flops[name] / step / 1e9:>9.1f}"
              f"{warmup[name]:>14.2f}")
    print(f"{'torch.mm 1024':<14}{'':>8}{'':>9}{'':>10}{'':>8}{'':>14}{'':>12}{mm:>9.1f}")


if __name__ == "__main__":
    main()
