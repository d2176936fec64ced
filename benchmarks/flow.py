"""Flow accuracy and speed: Farnebäck (seed 000 settings) vs Dual TV-L1 vs DIS presets, side by side.

Sequences with known motion (``kinetoscope.flow.synthetic_motion``: a smooth random texture moved by a
constant translation, rotation or zoom per frame, rendered from a larger base so the true flow is
exact). For each method: mean endpoint error (EPE, px, interior without a ``--margin`` border) per
sequence, and frames/s over all sequences (best of ``--repeats`` timed passes, after one warm-up
pair). Ratios are relative to Farnebäck: ``speed x`` = its frames/s over Farnebäck's, ``EPE x`` = its
mean EPE over Farnebäck's (below 1 is more accurate).

Goal (issue 6): a method >= 10x faster than Farnebäck at equal-or-better EPE (DIS is the candidate).
OpenCV runs on ``--threads`` threads (default 1, so the figures do not depend on what else runs).

    .venv/bin/python benchmarks/flow.py [--size 256] [--frames 9] [--threads 1] [--noise 0]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from kinetoscope.flow import compute_flow, endpoint_error, synthetic_motion

METHODS: list[tuple[str, str, dict]] = [
    ("farneback", "farneback", {}),
    ("tvl1", "tvl1", {}),
    ("dis-ultrafast", "dis", {"preset": "ultrafast"}),
    ("dis-fast", "dis", {"preset": "fast"}),
    ("dis-medium", "dis", {"preset": "medium"}),
    ("dis-fast-fs1", "dis", {"preset": "fast", "finest_scale": 1}),
]


def _sequences(size: int, frames: int, noise: float, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for kind, motion in (
        ("translation", {"shift": (4.5, -3.0)}),
        ("rotation", {"angle": 2.0}),
        ("zoom", {"scale": 1.03}),
    ):
        seq = synthetic_motion(kind, num_frames=frames, size=(size, size), seed=seed, **motion)
        video = seq.frames
        if noise > 0:
            noisy = video.astype(np.float32) + rng.normal(0.0, noise, video.shape)
            video = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        out[kind] = (video, seq.flow)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--frames", type=int, default=9, help="frames per sequence")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (grey levels) added")
    parser.add_argument("--margin", type=int, default=24, help="border excluded from the EPE")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest counts")
    parser.add_argument("--skip-tvl1", action="store_true", help="leave out TV-L1 (slow)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    sequences = _sequences(args.size, args.frames, args.noise, args.seed)
    pairs = sum(video.shape[0] - 1 for video, _ in sequences.values())

    rows = []
    for label, method, options in METHODS:
        if args.skip_tvl1 and method == "tvl1":
            continue
        compute_flow(next(iter(sequences.values()))[0][:2], method, **options)  # warm-up
        errors, best = {}, float("inf")
        repeats = 1 if method == "tvl1" else args.repeats
        for _ in range(repeats):
            started = time.perf_counter()
            estimates = {
                kind: compute_flow(video, method, **options) for kind, (video, _) in sequences.items()
            }
            best = min(best, time.perf_counter() - started)
        for kind, (_, truth) in sequences.items():
            errors[kind] = endpoint_error(estimates[kind], truth, margin=args.margin)
        rows.append((label, errors, pairs / best))

    reference_fps = rows[0][2]
    reference_epe = float(np.mean(list(rows[0][1].values())))
    kinds = list(sequences)
    print(
        f"flow benchmark: {args.size}x{args.size}, {args.frames} frames per sequence, noise {args.noise}, "
        f"{args.threads} OpenCV thread(s), EPE on the interior (margin {args.margin} px)"
    )
    header = f"{'method':<15}" + "".join(f"{'EPE ' + k[:5]:>12}" for k in kinds)
    header += f"{'EPE mean':>10}{'EPE x':>8}{'frames/s':>10}{'speed x':>9}"
    print(header)
    print("-" * len(header))
    for label, errors, fps in rows:
        mean_epe = float(np.mean(list(errors.values())))
        print(
            f"{label:<15}"
            + "".join(f"{errors[k]:>12.3f}" for k in kinds)
            + f"{mean_epe:>10.3f}{mean_epe / reference_epe:>8.2f}{fps:>10.1f}{fps / reference_fps:>9.1f}"
        )
    winners = [
        label
        for label, errors, fps in rows[1:]
        if fps >= 10 * reference_fps and all(errors[k] <= rows[0][1][k] for k in kinds)
    ]
    print(
        "goal (>= 10x Farnebäck's frames/s at equal-or-better EPE on every sequence): "
        + (f"met by {', '.join(winners)}" if winners else "not met")
    )


if __name__ == "__main__":
    main()
