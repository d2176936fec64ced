"""Backbone throughput on the CPU next to the machine's fp32 GEMM rate.

For r2plus1d_18, mc3_18 and x3d_s on clips of 16x112x112, batch 4, measures inference and training
clips/s and the achieved GFLOP/s (FLOPs from PyTorch's counter, 2 per multiply-add, see
``kinetoscope.models.profile``; training FLOPs = forward + backward counted the same way) and divides it
by the GFLOP/s of a 2048x2048 fp32 matmul measured in the same run and with the same thread count —
re-measured right before and after every timing (their mean is that row's "GEMM"), so a machine shared
with other jobs slows both sides of each ratio alike. Goal: >= 60 % of the GEMM rate at
inference for the ResNet-3D models.

Inference variants tried (each ratio is printed; "vs base" = speed-up over eager + no_grad):
  no_grad            eager, ``torch.no_grad`` (baseline)
  inference_mode     eager, ``torch.inference_mode``
  channels_last_3d   model and clip in ``torch.channels_last_3d``
  fx fuse            conv+BN folded by ``torch.fx.experimental.optimization.fuse``
  fx fuse + cl3d     both of the above (= ``kinetoscope.models.profile.optimize_for_inference``)
  jit freeze         ``torch.jit.trace`` + ``torch.jit.freeze`` (oneDNN conv/BN/ReLU fusion)
  compile            ``torch.compile`` with inductor freezing (only with ``--compile``; minutes to build)
Training variants: eager, channels_last_3d (forward + backward + SGD step).

Run: ``python benchmarks/backbones.py [--threads 1] [--repeats 2] [--compile] [--models a,b]``. Timings
are medians of few repeats on a shared machine; the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kinetoscope.models import create_model, list_models
from kinetoscope.models.profile import optimize_for_inference

DEFAULT_MODELS = ("mc3_18", "r2plus1d_18", "x3d_s")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 ``n x n @ n x n`` rate, 2 n^3 FLOPs per product."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def timed_with_gemm(fn: Callable[[], object], repeats: int, warmup: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and the mean GEMM GFLOP/s measured just before and just after it."""
    for _ in range(warmup):
        fn()
    before = gemm_gflops(repeats=2)
    seconds = median_seconds(fn, repeats, warmup=0)
    return seconds, (before + gemm_gflops(repeats=2)) / 2


def counted_flops(name: str, clip_shape: tuple[int, ...], train: bool) -> int:
    """FLOPs of one forward (and backward, if ``train``) of a batch, counted on the meta device."""
    with torch.device("meta"):
        model = create_model(name, num_classes=400)
        clip = torch.empty(clip_shape)
    model.train(train)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(clip).sum().backward()
        else:
            with torch.no_grad():
                model(clip)
    return counter.get_total_flops()


def inference_variants(model: nn.Module, clip: torch.Tensor, use_compile: bool
                       ) -> dict[str, Callable[[], object]]:
    clip_cl = clip.contiguous(memory_format=torch.channels_last_3d)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
    fused = optimize_for_inference(model, channels_last=False)
    fused_cl = optimize_for_inference(model)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(model), clip))

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()
        return run

    def inference(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return fn()
        return run

    variants = {
        "no_grad": no_grad(lambda: model(clip)),
        "inference_mode": inference(lambda: model(clip)),
        "channels_last_3d": inference(lambda: model_cl(clip_cl)),
        "fx fuse": inference(lambda: fused(clip)),
        "fx fuse + cl3d": inference(lambda: fused_cl(clip_cl)),
        "jit freeze": no_grad(lambda: frozen(clip)),
    }
    if use_compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(copy.deepcopy(model))
        variants["compile"] = inference(lambda: compiled(clip))
    return variants


def train_variants(name: str, clip: torch.Tensor) -> dict[str, Callable[[], object]]:
    labels = torch.zeros(clip.shape[0], dtype=torch.long)

    def step_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step() -> object:
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), labels)
            loss.backward()
            optimizer.step()
            return loss
        return step

    eager = create_model(name, num_classes=400).train()
    channels_last = create_model(name, num_classes=400).train().to(memory_format=torch.channels_last_3d)
    return {
        "eager": step_fn(eager, clip),
        "channels_last_3d": step_fn(channels_last, clip.contiguous(memory_format=torch.channels_last_3d)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=2, help="timed inference repeats (after 1-2 warm-ups)")
    parser.add_argument("--train-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (slow to build)")
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    console = Console()
    load_before = os.getloadavg()
    gemm = gemm_gflops()
    console.print(f"fp32 GEMM 2048^3: [bold]{gemm:.1f} GFLOP/s[/bold] with {args.threads} thread(s); "
                  f"load average {load_before[0]:.2f}")

    clip_shape = (args.batch, 3, args.frames, args.size, args.size)
    table = Table(title=f"backbones, batch {args.batch} x 3x{args.frames}x{args.size}x{args.size}, "
                  f"{args.threads} thread(s), GEMM {gemm:.1f} GFLOP/s")
    for column in ("model", "phase", "variant", "s / batch", "clips/s", "GFLOP/s", "GEMM", "% of GEMM", "vs base"):
        table.add_column(column, justify="left" if column in ("model", "phase", "variant") else "right")

    available = set(list_models())
    for name in args.models.split(","):
        if name not in available:
            console.print(f"[yellow]skipping {name}: not registered (kinetoscope.models.list_models())[/yellow]")
            continue
        clip = torch.randn(clip_shape)
        forward_flops = counted_flops(name, clip_shape, train=False)
        model = create_model(name, num_classes=400).eval()
        base = None
        for variant, fn in inference_variants(model, clip, args.compile).items():
            warmup = 2 if variant in ("jit freeze", "compile") else 1
            seconds, gemm_here = timed_with_gemm(fn, args.repeats, warmup)
            base = base or seconds
            rate = forward_flops / seconds / 1e9
            table.add_row(name, "inference", variant, f"{seconds:.3f}", f"{args.batch / seconds:.2f}",
                          f"{rate:.1f}", f"{gemm_here:.1f}", f"{100 * rate / gemm_here:.0f} %",
                          f"{base / seconds:.2f}x")
            console.print(f"{name} inference {variant}: {100 * rate / gemm_here:.0f} % of GEMM")
        if not args.skip_train:
            train_flops = counted_flops(name, clip_shape, train=True)
            base = None
            for variant, fn in train_variants(name, clip).items():
                seconds, gemm_here = timed_with_gemm(fn, args.train_repeats, 1)
                base = base or seconds
                rate = train_flops / seconds / 1e9
                table.add_row(name, "train", variant, f"{seconds:.3f}", f"{args.batch / seconds:.2f}",
                              f"{rate:.1f}", f"{gemm_here:.1f}", f"{100 * rate / gemm_here:.0f} %",
                              f"{base / seconds:.2f}x")
                console.print(f"{name} train {variant}: {100 * rate / gemm_here:.0f} % of GEMM")
        table.add_section()
    console.print(table)
    load_after = os.getloadavg()
    console.print(f"GFLOP/s = counted FLOPs (2 per multiply-add; training = forward + backward) / median time; "
                  f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
