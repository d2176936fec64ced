"""Temporal masks: the batched path vs the reference procedure, under both protocols (Mänttäri 2020 §3.1, §4.3).

Reference: one clip at a time, 300 fixed Adam iterations, ``loss.backward()`` through the model, the
freeze recursion as a Python loop. Batched: clips together, model in eval mode with frozen parameters,
vectorised freeze/reverse, under ``protocol="paper"`` (300 fixed iterations, the paper's; what model
comparisons use) and ``protocol="early-stop"`` (per-clip stopping at |ΔL| < 1e-5, the fast mode). The
last table compares the two models' mask lengths under each protocol. Models: the demo's ``cnn3d`` and
``convlstm`` (h = 8, 5 classes, 1 × 20 × 64 × 64), trained for a few epochs on Temporal Shapes 2Dot
so the masks have something to find (weights cached), and optionally ``i3d`` at 3 × 16 × 112 × 112
(untrained; timing only). Agreement: IoU of the binary masks (m > 0.5; two empty masks count as 1),
mean |Δm|, and the drop ratio / mask length of each.

    .venv/bin/python benchmarks/temporal_mask.py [--clips 6] [--i3d] [--i3d-iterations 30]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from kinetoscope.explain.stats import welch_test
from kinetoscope.explain.temporal_mask import apply_freeze, freeze_reference, temporal_mask, temporal_mask_reference
from kinetoscope.models import create_model

CACHE = Path.home() / ".cache" / "kinetoscope-bench"


def shapes_data(num: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from kinetoscope.synth import temporal_shapes

    videos, labels, _ = temporal_shapes(num, "2dot", seed=seed)
    x = torch.from_numpy(videos).float().div(255).permute(0, 4, 1, 2, 3).contiguous()  # [N, 1, 20, 64, 64]
    return x, torch.from_numpy(labels)


def trained(name: str, epochs: int = 4, num: int = 600) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, 5, 1, hidden=8)
    path = CACHE / f"{name}_h8_e{epochs}_n{num}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    x, y = shapes_data(num, seed=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(num)
        for start in range(0, num, 32):
            rows = order[start:start + 32]
            loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        print(f"  trained {name} epoch {epoch + 1}/{epochs}: last batch loss {loss.item():.3f}", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    values = []
    for x, y in zip(a, b, strict=True):
        union = (x | y).sum().item()
        values.append(1.0 if union == 0 else (x & y).sum().item() / union)
    return float(np.mean(values))


def nanmean(t: torch.Tensor) -> float:
    finite = t[torch.isfinite(t)]
    return float(finite.mean()) if finite.numel() else math.nan


def compare(label: str, model: torch.nn.Module, clips: torch.Tensor, iterations: int = 300) -> dict:
    started = time.perf_counter()
    reference = temporal_mask_reference(model, clips, iterations=iterations)
    reference_seconds = (time.perf_counter() - started) / len(clips)
    out = {"model": label, "clips": len(clips), "ref_s": reference_seconds, "ref_iters": iterations,
           "len_ref": float(reference.mask_length.float().mean()), "ratio_ref": nanmean(reference.drop_ratio),
           "lengths": {"reference": reference.mask_length.float()}}
    for protocol in ("paper", "early-stop"):
        started = time.perf_counter()
        result = temporal_mask(model, clips, protocol=protocol, iterations=iterations)
        out[protocol] = {
            "s": (time.perf_counter() - started) / len(clips),
            "iters": float(result.iterations.float().mean()),
            "iou": iou(result.binary_mask, reference.binary_mask),
            "dm": float((result.mask - reference.mask).abs().mean()),
            "len": float(result.mask_length.float().mean()),
            "ratio": nanmean(result.drop_ratio),
            "diff": float(result.drop_difference.mean()),
            "loss": float(result.loss.mean()),
        }
        out["lengths"][protocol] = result.mask_length.float()
    return out


def perturbation_timing(clips: torch.Tensor, repeats: int = 20) -> list[tuple[str, float]]:
    mask = torch.rand(clips.shape[0], clips.shape[2], requires_grad=True)
    out = []
    for name, fn in [("reference loop (per clip)", freeze_reference),
                     ("recurrence (batched)", lambda c, m: apply_freeze(c, m, "recurrence")),
                     ("[T,T] matrix (batched)", lambda c, m: apply_freeze(c, m, "matrix"))]:
        started = time.perf_counter()
        for _ in range(repeats):
            (grad,) = torch.autograd.grad(fn(clips, mask).sum(), mask)
        out.append((name, (time.perf_counter() - started) / repeats * 1000))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--i3d", action="store_true", help="also time i3d at 3x16x112x112 (slow on CPU)")
    parser.add_argument("--i3d-clips", type=int, default=2)
    parser.add_argument("--i3d-iterations", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clips, _ = shapes_data(args.clips, seed=7)
    rows = []
    for name in ("cnn3d", "convlstm"):
        model = trained(name)
        rows.append(compare(name, model, clips))
        print(f"  {name} done", flush=True)
    if args.i3d:
        model = create_model("i3d", 5, 3).eval()
        rows.append(compare(f"i3d ({args.i3d_iterations} it)", model, torch.rand(args.i3d_clips, 3, 16, 112, 112),
                            iterations=args.i3d_iterations))
    print(f"\nTemporal masks, seconds per clip (torch threads {torch.get_num_threads()}); agreement with the "
          "reference (IoU of binary masks, mean |Δm|)")
    print(f"{'model':<18}{'protocol':<12}{'s/clip':>8}{'vs ref':>8}{'iters':>7}{'IoU':>6}{'mean|Δm|':>10}"
          f"{'length':>8}{'drop ratio':>12}{'final loss':>12}")
    for r in rows:
        print(f"{r['model']:<18}{'reference':<12}{r['ref_s']:>8.2f}{1.0:>7.1f}x{r['ref_iters']:>7}{'':>6}{'':>10}"
              f"{r['len_ref']:>8.2f}{r['ratio_ref']:>12.2f}")
        for protocol in ("paper", "early-stop"):
            p = r[protocol]
            print(f"{'':<18}{protocol:<12}{p['s']:>8.2f}{r['ref_s'] / p['s']:>7.1f}x{p['iters']:>7.0f}{p['iou']:>6.2f}"
                  f"{p['dm']:>10.3f}{p['len']:>8.2f}{p['ratio']:>12.2f}{p['loss']:>12.4f}")
    trained_rows = [r for r in rows if r["model"] in ("cnn3d", "convlstm")]
    if len(trained_rows) == 2:
        a, b = trained_rows
        print("\nMask length, cnn3d vs convlstm (mean ± std over the clips; Welch p)")
        for protocol in ("reference", "paper", "early-stop"):
            x, y = a["lengths"][protocol], b["lengths"][protocol]
            p_value = welch_test(x.tolist(), y.tolist())["p"]
            ratio = float(y.mean() / x.mean()) if float(x.mean()) else math.nan
            print(f"  {protocol:<12} cnn3d {float(x.mean()):5.2f} ± {float(x.std()):4.2f}   convlstm "
                  f"{float(y.mean()):5.2f} ± {float(y.std()):4.2f}   convlstm/cnn3d {ratio:5.2f}   p {p_value:.2g}")
    print("\nFreeze perturbation forward+backward, [6, 1, 20, 64, 64] (ms)")
    timings = perturbation_timing(clips)
    base = timings[0][1]
    for name, ms in timings:
        print(f"  {name:<28}{ms:>8.2f} ms  {base / ms:>5.1f}x")


if __name__ == "__main__":
    main()
