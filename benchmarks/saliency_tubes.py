"""Saliency Tubes: Eq. 7.1's order (upsample every channel's map, then square and sum; the default) vs
the shortcut (square and sum at the layer's resolution, upsample once), and the per-channel spline as
per-axis matrix products vs ``scipy.ndimage.zoom`` per channel (Stergiou 2021 §7.4, Fig. 7.5).

Models untrained (timing and agreement only): r3d_18 and i3d at 3 x 16 x 112 x 112. Reports seconds per
clip for the class weights (forward + backward) and for each way of building the tube, and how far the
shortcut is from the exact order (max |Δ|, IoU of the regions above 0.5, same peak voxel).

    .venv/bin/python benchmarks/saliency_tubes.py [--clips 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import ndimage

from kinetoscope.explain.base import minmax
from kinetoscope.explain.tubes import layer_class_weights, saliency_tube_volumes, tube_channels
from kinetoscope.models import create_model


def scipy_exact(activations: torch.Tensor, weights: torch.Tensor, size: tuple[int, int, int]) -> np.ndarray:
    """Eq. 7.1's order with ``scipy.ndimage.zoom`` on chunks of channels (H, W then T)."""
    keep = tube_channels(activations, weights)
    z = minmax(weights * activations, (2, 3, 4)) * keep[:, :, None, None, None]
    out = []
    for b in range(z.shape[0]):
        kept = z[b, keep[b]].double().numpy()
        t0, h0, w0 = kept.shape[1:]
        tube = np.zeros(size)
        for start in range(0, kept.shape[0], 32):
            part = ndimage.zoom(kept[start:start + 32], (1, 1, size[1] / h0, size[2] / w0), order=3,
                                mode="nearest", grid_mode=True)
            part = ndimage.zoom(part, (1, size[0] / t0, 1, 1), order=3, mode="nearest", grid_mode=True)
            tube += (np.clip(part, 0, 1) ** 2).sum(axis=0)
        out.append(tube / tube.max())
    return np.stack(out).astype(np.float32)


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    clips = torch.rand(args.clips, 3, 16, 112, 112)
    size = tuple(clips.shape[2:])
    print(f"Saliency Tubes, {args.clips} clips of 3x16x112x112, seconds per clip (torch threads 1)")
    print(f"{'model':<10}{'layer':>16}{'weights':>9}{'shortcut':>10}{'exact':>8}{'exact scipy':>13}"
          f"{'exact/shortcut':>16}{'scipy/matrix':>14}{'max|Δ|':>8}{'IoU>0.5':>9}{'same peak':>11}")
    for name in ("r3d_18", "i3d"):
        model = create_model(name, num_classes=400).eval()
        (activations, weights, _, _), t_weights = timed(layer_class_weights, model, clips)
        (shortcut, _), t_short = timed(saliency_tube_volumes, activations, weights, size, exact=False)
        (exact, _), t_exact = timed(saliency_tube_volumes, activations, weights, size)
        reference, t_scipy = timed(scipy_exact, activations, weights, size)
        assert np.abs(reference - exact).max() < 1e-4, "matrix and scipy splines disagree"
        a, b = exact > 0.5, shortcut > 0.5
        iou = float((a & b).sum() / max((a | b).sum(), 1))
        peaks = np.mean([e.argmax() == s.argmax() for e, s in zip(exact, shortcut, strict=True)])
        n = args.clips
        print(f"{name:<10}{str(tuple(activations.shape[1:])):>16}{t_weights / n:>9.2f}{t_short / n:>10.3f}"
              f"{t_exact / n:>8.2f}{t_scipy / n:>13.2f}{t_exact / t_short:>15.1f}x{t_scipy / t_exact:>13.1f}x"
              f"{np.abs(exact - shortcut).max():>8.3f}{iou:>9.2f}{peaks:>11.2f}")


if __name__ == "__main__":
    main()
