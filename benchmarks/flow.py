"""Flow accuracy and speed: Farnebäck, Dual TV-L1, DIS presets and RAFT, side by side, on motions with
known flow.

Sequences (``kinetoscope.flow``): ``synthetic_motion`` — a smooth random texture under one global
translation, rotation or zoom; ``layered_motion`` ("layers") — a textured background and three textured
ellipses, each with its own affine motion (translation; rotation; zoom), stacked with occlusion;
``deformation_motion`` ("deform") — a smooth random non-rigid deformation with a drift. Every frame is
rendered from the textures directly, so the true flow is exact. Scores: endpoint error (EPE, px) on the
interior (without a ``--margin`` border) per sequence; for "layers" also inside the regions (away from
motion boundaries, not occluded), at motion boundaries (within 2 px of a change of visible layer) and on
occluded pixels (no correspondence in the next frame); ``EPE mean`` = the mean over the five sequences'
interior EPE; frames/s over all sequences (the fastest of 1 + ``--repeats`` timed passes, interleaved
over the methods so a change of machine load hits them alike; one pass for TV-L1 and RAFT).
``x fastest`` = frames/s over the fastest method's.

RAFT rows: with trained weights imported (``kinetoscope models import --from torchvision raft_large FILE``)
the ``raft`` flow method; without them an untrained RAFT of the same size, timed only (no EPE: an untrained
network's flow means nothing). RAFT runs on ``--device`` (default CUDA if available) with ``--threads``
torch threads. The last lines print the accuracy/speed frontier (methods not beaten on both EPE mean and
frames/s, fastest first) and the rule used to pick the appearance-free fallback: the most accurate method
whose frames/s is within 2x of the fastest (``AFD_FALLBACK`` in ``kinetoscope.flow.compute``).
OpenCV and torch run on ``--threads`` threads (default 1, so the figures do not depend on what else runs).

``--sweep`` replaces the table by a search, on the three global motions, for a DIS setting >= 10x faster
than Farnebäck at equal-or-better EPE (an earlier goal) among ``cv2.DISOpticalFlow`` settings: after
timing Farnebäck in the same run (same repeats), it evaluates a grid of about 430 DIS configurations
(every setter set explicitly: finest scale 0-3, patch size 4-16, stride, gradient-descent iterations,
variational refinement iterations / alpha / delta / gamma, mean normalisation, spatial propagation;
the grid covers the accuracy/speed frontier of an earlier ~3,800-configuration exploration, including
its frontier points and the three presets; settings OpenCV would silently override at the frame size,
a finest scale above its coarsest level, are left out). ``--repeats`` defaults to 2 there, which keeps
the sweep at about 1-2 minutes at 1 thread. It prints the number of configurations, the Pareto
frontier (not beaten on both the speed ratio and the worst EPE ratio = max over the sequences of EPE /
Farnebäck's EPE), sorted by speed, and a verdict: the best worst-EPE ratio at >= 10x, and the best
speed ratio at a worst EPE ratio <= 1. On the default sequences no DIS configuration meets the goal:
translation (Farnebäck EPE ~0.007 px) needs finest scale 0, which is slower than Farnebäck (~0.3x);
at >= 10x the best worst-EPE ratio is ~4.7 (translation EPE ~0.034 px).

    .venv/bin/python benchmarks/flow.py [--size 256] [--frames 9] [--threads 1] [--noise 0] [--skip-tvl1]
        [--skip-raft] [--device cuda] [--sweep]
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import cv2
import numpy as np

from kinetoscope.flow import compute_flow, deformation_motion, endpoint_error, layered_motion, synthetic_motion
from kinetoscope.flow.compute import to_gray

METHODS: list[tuple[str, str, dict]] = [
    ("farneback", "farneback", {}),
    ("tvl1", "tvl1", {}),
    ("dis-ultrafast", "dis", {"preset": "ultrafast"}),
    ("dis-fast", "dis", {"preset": "fast"}),
    ("dis-medium", "dis", {"preset": "medium"}),
    ("dis-fast-fs1", "dis", {"preset": "fast", "finest_scale": 1}),
]  # RAFT rows are added by _raft_rows

Sequences = dict[str, tuple[np.ndarray, np.ndarray]]


def _sequences(size: int, frames: int, noise: float, seed: int) -> Sequences:
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


class DisConfig(NamedTuple):
    """One ``cv2.DISOpticalFlow`` setting; alpha/delta/gamma only matter with variational refinement."""

    finest_scale: int
    patch_size: int
    patch_stride: int
    gradient_descent_iterations: int
    variational_refinement_iterations: int
    alpha: float = 20.0  # OpenCV's defaults (all presets)
    delta: float = 5.0
    gamma: float = 10.0
    mean_normalization: bool = True
    spatial_propagation: bool = True


def _dis_solver(config: DisConfig) -> cv2.DISOpticalFlow:
    solver = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    solver.setCoarsestScale(-1)  # automatic, as in every preset
    solver.setFinestScale(config.finest_scale)
    solver.setPatchSize(config.patch_size)
    solver.setPatchStride(config.patch_stride)
    solver.setGradientDescentIterations(config.gradient_descent_iterations)
    solver.setVariationalRefinementIterations(config.variational_refinement_iterations)
    solver.setVariationalRefinementAlpha(config.alpha)
    solver.setVariationalRefinementDelta(config.delta)
    solver.setVariationalRefinementGamma(config.gamma)
    solver.setVariationalRefinementEpsilon(0.01)  # OpenCV's default
    solver.setUseMeanNormalization(config.mean_normalization)
    solver.setUseSpatialPropagation(config.spatial_propagation)
    return solver


def _dis_flow(frames: np.ndarray, config: DisConfig) -> np.ndarray:
    """Like ``compute_flow(frames, "dis", ...)`` (solver built per call) with every DIS setter available."""
    gray = to_gray(frames)
    solver = _dis_solver(config)
    out = np.empty((gray.shape[0] - 1, *gray.shape[1:3], 2), dtype=np.float32)
    for t in range(gray.shape[0] - 1):
        out[t] = solver.calc(np.ascontiguousarray(gray[t]), np.ascontiguousarray(gray[t + 1]), None)
    if (solver.getFinestScale(), solver.getPatchSize()) != (config.finest_scale, config.patch_size):
        raise RuntimeError(f"OpenCV replaced the finest scale / patch size of {config}")
    return out


def _coarsest_scale(size: int, patch_size: int) -> int:
    """OpenCV's automatic coarsest pyramid level for a ``size`` x ``size`` frame (``DISOpticalFlowImpl::calc``).

    With a finest scale above it, OpenCV silently replaces the finest scale and the patch size by its own
    choice (``autoSelectPatchSizeAndScales``: e.g. finest scale 3 with 12 px patches on 256 px frames runs
    at full resolution), so the sweep leaves such settings out."""
    if size // patch_size < 1:
        return -1
    return min(
        int(math.log(size / (4.0 * patch_size)) / math.log(2.0) + 0.5),
        int(math.log(size // patch_size) / math.log(2.0)),
    )


def _sweep_grid(size: int) -> tuple[list[DisConfig], int]:
    """Grid around the frontier of the earlier exploration (duplicates removed, order kept), and how many
    settings were left out because OpenCV would override them at this frame size."""
    no_prop = {"spatial_propagation": False}
    frontier = [  # earlier exploration's frontier, from fastest to most accurate
        DisConfig(2, 8, 6, 25, 1, 0.5, 0.5, 0.0, mean_normalization=False, spatial_propagation=False),
        DisConfig(2, 8, 4, 8, 2, 100.0, 5.0, 10.0, mean_normalization=False),
        DisConfig(1, 8, 6, 4, 0),
        DisConfig(1, 8, 6, 16, 2, 100.0, 1.0, 1.0, mean_normalization=False),
        DisConfig(1, 6, 4, 16, 5, 50.0, 2.0, 1.0),
        DisConfig(0, 12, 3, 12, 0),
    ]
    presets = [DisConfig(2, 8, 4, 12, 0), DisConfig(2, 8, 4, 16, 5), DisConfig(1, 8, 3, 25, 5)]
    configs = frontier + presets + [c._replace(spatial_propagation=not c.spatial_propagation) for c in frontier]
    # coarse grid, OpenCV's variational parameters
    for fs, ps, st, gd, vr, mn in itertools.product(
        (1, 2, 3), (6, 8, 12), (3, 4, 6), (4, 12, 25), (0, 2), (True, False)
    ):
        if st < ps:
            configs.append(DisConfig(fs, ps, st, gd, vr, mean_normalization=mn))
    # the smallest and largest patches
    for fs, (ps, st), vr in itertools.product((1, 2), ((4, 2), (4, 3), (16, 4), (16, 8)), (0, 2)):
        configs.append(DisConfig(fs, ps, st, 12, vr))
    # variational refinement around the frontier's patch settings
    variational = ((0.5, 0.5, 0.0), (20.0, 5.0, 10.0), (50.0, 2.0, 1.0), (100.0, 1.0, 1.0), (100.0, 5.0, 10.0))
    for (fs, ps, st, gd), vr, (alpha, delta, gamma), mn in itertools.product(
        ((2, 8, 6, 25), (2, 8, 4, 8), (1, 8, 6, 4), (1, 8, 6, 16), (1, 6, 4, 16)),
        (1, 2, 5),
        variational,
        (True, False),
    ):
        configs.append(DisConfig(fs, ps, st, gd, vr, alpha, delta, gamma, mean_normalization=mn))
    # full resolution (slow: a few only)
    configs += [
        DisConfig(0, 8, 3, 12, 0),
        DisConfig(0, 12, 4, 12, 0),
        DisConfig(0, 12, 3, 4, 0),
        DisConfig(0, 12, 6, 8, 0, **no_prop),
        DisConfig(0, 12, 3, 12, 2, 100.0, 1.0, 1.0),
    ]
    configs = list(dict.fromkeys(configs))
    valid = [c for c in configs if c.finest_scale <= _coarsest_scale(size, c.patch_size)]
    return valid, len(configs) - len(valid)


def _timed(
    run: Callable[[np.ndarray], np.ndarray], sequences: Sequences, repeats: int, margin: int
) -> tuple[dict[str, float], float]:
    """EPE per sequence and frames/s (best of ``repeats`` passes over all sequences, after a warm-up pair)."""
    run(next(iter(sequences.values()))[0][:2])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        estimates = {kind: run(video) for kind, (video, _) in sequences.items()}
        best = min(best, time.perf_counter() - started)
    pairs = sum(video.shape[0] - 1 for video, _ in sequences.values())
    errors = {kind: endpoint_error(estimates[kind], truth, margin=margin) for kind, (_, truth) in sequences.items()}
    return errors, pairs / best


def _sweep(args: argparse.Namespace, sequences: Sequences) -> None:
    started = time.perf_counter()
    repeats = 2 if args.repeats is None else args.repeats
    kinds = list(sequences)
    reference, reference_fps = _timed(lambda video: compute_flow(video, "farneback"), sequences, repeats, args.margin)
    configs, skipped = _sweep_grid(args.size)
    results = []
    for config in configs:
        errors, fps = _timed(lambda video, c=config: _dis_flow(video, c), sequences, repeats, args.margin)
        worst = max(errors[k] / reference[k] for k in kinds)
        results.append((config, errors, worst, fps / reference_fps))
    elapsed = time.perf_counter() - started

    print(
        f"DIS sweep: {args.size}x{args.size}, {args.frames} frames per sequence, noise {args.noise}, "
        f"{args.threads} OpenCV thread(s), EPE on the interior (margin {args.margin} px), best of {repeats} passes"
    )
    print("farneback: EPE " + ", ".join(f"{k} {reference[k]:.4f}" for k in kinds) + f"; {reference_fps:.1f} frames/s")
    print(
        f"configurations tried: {len(results)} ({elapsed:.0f} s including Farnebäck; {skipped} more left out: "
        "finest scale above OpenCV's coarsest level at this size, where OpenCV overrides the settings)"
    )
    frontier, best_worst = [], float("inf")
    for row in sorted(results, key=lambda r: (-r[3], r[2])):  # fastest first; keep what beats all faster ones
        if row[2] < best_worst:
            frontier.append(row)
            best_worst = row[2]
    print("Pareto frontier (speed x vs worst EPE x = max over sequences of EPE / Farnebäck's), by speed:")
    header = f"{'fs':>3}{'ps':>4}{'st':>4}{'gd':>4}{'vr':>4}{'alpha':>7}{'delta':>7}{'gamma':>7}{'mnorm':>7}{'prop':>6}"
    header += "".join(f"{'EPE ' + k[:5]:>12}" for k in kinds) + f"{'worst x':>9}{'speed x':>9}"
    print(header)
    print("-" * len(header))
    for config, errors, worst, speed in reversed(frontier):
        print(
            f"{config.finest_scale:>3}{config.patch_size:>4}{config.patch_stride:>4}"
            f"{config.gradient_descent_iterations:>4}{config.variational_refinement_iterations:>4}"
            f"{config.alpha:>7g}{config.delta:>7g}{config.gamma:>7g}"
            f"{'yes' if config.mean_normalization else 'no':>7}{'yes' if config.spatial_propagation else 'no':>6}"
            + "".join(f"{errors[k]:>12.4f}" for k in kinds)
            + f"{worst:>9.2f}{speed:>9.2f}"
        )
    fast = [worst for _, _, worst, speed in results if speed >= 10]
    accurate = [speed for _, _, worst, speed in results if worst <= 1]
    reachable = any(worst <= 1 and speed >= 10 for _, _, worst, speed in results)
    print(
        "verdict: best worst EPE x at >= 10x speed: "
        + (f"{min(fast):.2f}" if fast else "none that fast")
        + "; best speed x at worst EPE x <= 1: "
        + (f"{max(accurate):.2f}" if accurate else "none that accurate")
        + " -> goal (>= 10x at equal-or-better EPE on every sequence) "
        + ("reachable" if reachable else "not reachable")
        + " with DIS on these sequences"
    )


class Scene(NamedTuple):
    """A benchmark sequence: frames, true flow, and region masks (empty for one global motion)."""

    video: np.ndarray
    truth: np.ndarray
    regions: dict[str, np.ndarray]


def _scenes(size: int, frames: int, noise: float, seed: int) -> dict[str, Scene]:
    """The three global motions plus layered objects with occlusion and a smooth non-rigid deformation."""
    scenes = {kind: Scene(video, truth, {}) for kind, (video, truth) in _sequences(size, frames, noise, seed).items()}
    rng = np.random.default_rng(seed + 1)
    for name, seq in (
        ("layers", layered_motion(num_frames=frames, size=(size, size), seed=seed)),
        ("deform", deformation_motion(num_frames=frames, size=(size, size), seed=seed)),
    ):
        video = seq.frames
        if noise > 0:
            noisy = video.astype(np.float32) + rng.normal(0.0, noise, video.shape)
            video = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        scenes[name] = Scene(video, seq.flow, seq.regions)
    return scenes


def _raft_rows(args: argparse.Namespace) -> list[tuple[str, str, dict, bool]]:
    """RAFT rows: (label, method, options, trained). With imported weights (``raft_weights_path``) the
    real flow method; without, an untrained model of the same size, timed only (its EPE means nothing)."""
    from kinetoscope.flow.raft import raft_weights_path

    rows = []
    for variant in ("small", "large"):
        try:
            raft_weights_path(variant)
            rows.append((f"raft-{variant}", "raft", {"variant": variant, "device": args.device}, True))
        except FileNotFoundError:
            rows.append((f"raft-{variant}", "raft-untrained", {"variant": variant, "device": args.device}, False))
    return rows


def _untrained_raft(variant: str, device: str | None) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from kinetoscope.flow.raft import RAFT, RaftEstimator, default_device

    torch.manual_seed(0)
    estimator = RaftEstimator(RAFT(variant).to(device or default_device()))
    return lambda video: estimator.estimate_pairs(video, [(t, t + 1) for t in range(len(video) - 1)])


def _table(args: argparse.Namespace, scenes: dict[str, Scene]) -> None:
    import torch

    torch.set_num_threads(args.threads)
    pairs = sum(scene.video.shape[0] - 1 for scene in scenes.values())
    methods = [(label, method, options, True) for label, method, options in METHODS]
    if not args.skip_raft:
        methods += _raft_rows(args)
    runs, errors_of, best = {}, {}, {}
    for label, method, options, trained in methods:  # accuracy pass (timed too) after a warm-up pair
        if args.skip_tvl1 and method == "tvl1":
            continue
        if method == "raft-untrained":
            run = _untrained_raft(options["variant"], options["device"])
        else:
            run = lambda video, m=method, o=options: compute_flow(video, m, **o)  # noqa: E731
        run(next(iter(scenes.values())).video[:2])
        started = time.perf_counter()
        estimates = {name: run(scene.video) for name, scene in scenes.items()}
        best[label] = time.perf_counter() - started
        errors = {}
        for name, scene in scenes.items():
            errors[name] = endpoint_error(estimates[name], scene.truth, margin=args.margin)
            for region, mask in scene.regions.items():
                errors[f"{name} {region}"] = endpoint_error(estimates[name], scene.truth, args.margin, mask)
        errors_of[label] = errors if trained else None
        if method not in ("tvl1", "raft", "raft-untrained"):  # slow ones: the one pass
            runs[label] = run
    # further timed passes, interleaved over the fast methods so a change of machine load hits them alike
    for _ in range(5 if args.repeats is None else args.repeats):
        for label, run in runs.items():
            started = time.perf_counter()
            for scene in scenes.values():
                run(scene.video)
            best[label] = min(best[label], time.perf_counter() - started)
    rows = [(label, errors_of[label], pairs / best[label]) for label in best]

    names = list(scenes)
    columns = [*names[:3], "layers", "layers inside", "layers boundary", "layers occluded", "deform"]
    short = {"translation": "trans", "rotation": "rot", "zoom": "zoom", "layers": "layers",
             "layers inside": "inside", "layers boundary": "bound.", "layers occluded": "occl.", "deform": "deform"}
    fastest = max(fps for _, _, fps in rows)
    print(
        f"flow benchmark: {args.size}x{args.size}, {args.frames} frames per sequence ({pairs} pairs), noise "
        f"{args.noise}, {args.threads} thread(s), EPE px on the interior (margin {args.margin} px); "
        f"layers: inside / at motion boundaries (<= 2 px) / occluded pixels"
    )
    header = f"{'method':<15}" + "".join(f"{short[c]:>8}" for c in columns)
    header += f"{'EPE mean':>10}{'frames/s':>10}{'x fastest':>10}"
    print(header)
    print("-" * len(header))
    scored = []
    for label, errors, fps in rows:
        if errors is None:
            cells = "".join(f"{'-':>8}" for _ in columns) + f"{'untrained':>10}"
        else:
            mean = float(np.mean([errors[n] for n in names]))  # whole-interior EPE, averaged over sequences
            scored.append((label, mean, fps))
            cells = "".join(f"{errors[c]:>8.3f}" for c in columns) + f"{mean:>10.3f}"
        print(f"{label:<15}{cells}{fps:>10.1f}{fps / fastest:>10.2f}")
    if any(errors is None for _, errors, _ in rows):
        print("raft rows without EPE: no trained weights here (kinetoscope models import --from torchvision "
              "raft_large FILE); timed with an untrained model of the same size")
    frontier, best_epe = [], float("inf")
    for label, mean, _fps in sorted(scored, key=lambda r: (-r[2], r[1])):
        if mean < best_epe:
            frontier.append(label)
            best_epe = mean
    print("accuracy/speed frontier (fastest first): " + " -> ".join(frontier))
    fastest_scored = max(fps for _, _, fps in scored)
    within = [row for row in scored if row[2] >= fastest_scored / 2]
    pick = min(within, key=lambda r: r[1])
    print(
        f"rule (most accurate within 2x of the fastest, {fastest_scored:.0f} frames/s): {pick[0]} "
        f"(EPE mean {pick[1]:.3f}, {pick[2]:.0f} frames/s); candidates: "
        + ", ".join(f"{label} {mean:.3f}" for label, mean, _ in sorted(within, key=lambda r: r[1]))
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--frames", type=int, default=9, help="frames per sequence")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads and torch.set_num_threads")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std (grey levels) added")
    parser.add_argument("--margin", type=int, default=24, help="border excluded from the EPE")
    parser.add_argument(
        "--repeats", type=int, default=None,
        help="extra timed passes; the fastest counts (default 5 after the accuracy pass; 2 with --sweep)",
    )
    parser.add_argument("--skip-tvl1", action="store_true", help="leave out TV-L1 (slow)")
    parser.add_argument("--skip-raft", action="store_true", help="leave out RAFT")
    parser.add_argument("--device", default=None, help="torch device for RAFT (default: CUDA if available)")
    parser.add_argument("--sweep", action="store_true", help="search DIS settings for the goal instead of the table")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    if args.sweep:
        _sweep(args, _sequences(args.size, args.frames, args.noise, args.seed))
    else:
        _table(args, _scenes(args.size, args.frames, args.noise, args.seed))


if __name__ == "__main__":
    main()
