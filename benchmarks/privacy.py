"""Privacy obfuscation speed: motion-noise (Ilic 2024 §5.3) vs the blur baseline, on the same frames.

The clip is a textured "person" translating over a textured background (``--size`` square frames,
``--frames`` of them). ``motion-noise`` runs the whole method: DINO ViT-S/8 keys (random weights — the
compute is the same as with the released ones) at patch-embedding stride ``--stride`` on 224² inputs,
saliency against 4 templates, flow (``--flow``), flow-carried noise and the blend; its stages are also
timed on their own. ``blur`` is the strong blur baseline (κ=21, σ=10 at 224²). Frames/s are the best of
``--repeats`` passes on ``--threads`` torch/OpenCV threads; ratios are relative to blur. The document
gives ≈100 ms/frame for its method on an RTX 4080.

    .venv/bin/python benchmarks/privacy.py [--size 224] [--frames 8] [--stride 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

from kinetoscope.flow import compute_flow
from kinetoscope.models.dino_vit import DinoKeyExtractor, dino_vits8
from kinetoscope.synth.privacy import ObfuscationSettings, blend, blur, motion_noise, obfuscate, saliency_maps


def _clip(size: int, frames: int) -> np.ndarray:
    rng = np.random.default_rng(0)

    def texture(h: int, w: int) -> np.ndarray:
        t = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
        return (t - t.min()) / (t.max() - t.min())

    bg, fg = texture(size, size), texture(size // 2, size // 4)
    background = np.stack([20 + 80 * bg, 150 + 85 * bg, 150 + 85 * bg.T], -1).astype(np.uint8)
    person = np.stack([150 + 85 * fg, 20 + 80 * fg, 20 + 80 * fg], -1).astype(np.uint8)
    out = []
    for t in range(frames):
        frame = background.copy()
        x = size // 8 + 2 * t
        frame[size // 4:size // 4 + person.shape[0], x:x + person.shape[1]] = person
        out.append(frame)
    return np.stack(out)


def _best(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--flow", default="farneback")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.manual_seed(0)

    frames = _clip(args.size, args.frames)
    extractor = DinoKeyExtractor(dino_vits8(), stride=args.stride)
    grid = extractor(frames[:1])[0]
    keys = grid[[grid.shape[0] // 3, grid.shape[0] // 2, grid.shape[0] // 2, 2 * grid.shape[0] // 3],
                [grid.shape[1] // 4, grid.shape[1] // 3, grid.shape[1] // 4, grid.shape[1] // 3]]
    settings = ObfuscationSettings(method="motion-noise", flow_method=args.flow)
    mean, std = (128.0,) * 3, (40.0,) * 3
    n = len(frames)

    rows = [
        ("blur (strong)", _best(lambda: blur(frames, "strong"), args.repeats)),
        ("motion-noise (all)", _best(lambda: obfuscate(frames, settings, template_keys=keys, extractor=extractor,
                                                       mean=mean, std=std), args.repeats)),
        ("  DINO keys + saliency", _best(lambda: saliency_maps(frames, keys, extractor), args.repeats)),
        (f"  flow ({args.flow})", _best(lambda: compute_flow(frames, args.flow), args.repeats)),
    ]
    flow = compute_flow(frames, args.flow)
    noise = motion_noise(frames, mean, std, flow=flow)
    saliency = saliency_maps(frames, keys, extractor)
    rows.append(("  noise warp", _best(lambda: motion_noise(frames, mean, std, flow=flow), args.repeats)))
    rows.append(("  blend", _best(lambda: blend(frames, noise, saliency), args.repeats)))

    blur_fps = n / rows[0][1]
    print(f"{n} frames of {args.size}x{args.size}, DINO stride {args.stride} ({grid.shape[0]}x{grid.shape[1]} keys), "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'method':<26}{'ms/frame':>10}{'frames/s':>10}{'vs blur':>10}")
    for name, seconds in rows:
        fps = n / seconds
        print(f"{name:<26}{1000 * seconds / n:>10.1f}{fps:>10.2f}{fps / blur_fps:>10.4f}")
    print(f"motion-noise / blur frames/s ratio: {(n / rows[1][1]) / blur_fps:.5f} "
          f"(blur is {rows[1][1] / rows[0][1]:.0f}x faster); the document: ~100 ms/frame on an RTX 4080")


if __name__ == "__main__":
    main()
