"""Detect & Track: frames/s of detection only vs detection + tracking (+ tube linking), CPU.

Feichtenhofer 2017 §8.5 reports the cost of tracking as 141 ms vs 127 ms per 1000x600 frame on a
Titan X (+11 %: correlation layers and RoI tracking), and 46 ms per frame for the (unoptimised) tube
linking on one CPU core. This benchmark runs :meth:`DetectTrack.detect_video` over the same clip
with ``track=False`` and ``track=True`` (interleaved, best of ``--repeats``) and times
:func:`link_tubes` on the result, for the CPU-scale model at 128 px and the document's ResNet-101
architecture at a reduced input size. ``--run`` uses a trained run's weights (the number of
detections, hence the NMS and linking cost, depends on the weights).

    .venv/bin/python benchmarks/detect_track.py [--frames 8] [--repeats 3] [--threads 1] [--run RUN]
"""

from __future__ import annotations

import argparse
import time

import torch

from kinetoscope.models import create_model
from kinetoscope.models.tube_linking import link_tubes


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def measure(model: torch.nn.Module, clip: torch.Tensor, repeats: int, classes: int) -> dict[str, float]:
    model.eval()
    model.detect_video(clip[:, :2])  # warm-up
    detect, track, link = [], [], []
    for _ in range(repeats):
        detect.append(timed(model.detect_video, clip, track=False)[0])
        seconds, (detections, tracklets) = timed(model.detect_video, clip, track=True)
        track.append(seconds)
        link.append(timed(link_tubes, detections, tracklets, classes)[0])
    frames = clip.shape[1]
    return {"det": frames / min(detect), "track": frames / min(track), "link_ms": 1000 * min(link) / frames,
            "boxes": sum(len(d) for d in detections) / frames}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run", default=None, help="a trained D&T run directory (CPU model row)")
    parser.add_argument("--no-resnet101", action="store_true", help="skip the document-scale row")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    rows = []
    if args.run:
        from kinetoscope.models.checkpoint import load_run_model

        cpu, spec = load_run_model(args.run)
        cpu_classes, cpu_name = spec["num_classes"], f"{spec['name']} (trained)"
    else:
        cpu_classes, cpu_name = 3, "detect_track_cpu"
        cpu = create_model(cpu_name, cpu_classes)
    rows.append((cpu_name, (128, 128), measure(cpu, torch.randn(3, args.frames, 128, 128), args.repeats, cpu_classes)))
    if not args.no_resnet101:
        big = create_model("detect_track", 30)
        rows.append(("detect_track (ResNet-101)", (224, 320),
                     measure(big, torch.randn(3, max(2, args.frames // 4), 224, 320), 1, 30)))

    print(f"threads={args.threads}, frames={args.frames}, best of {args.repeats}")
    print(f"{'model':28s} {'input':>9s} {'det f/s':>8s} {'det+track f/s':>14s} {'track cost':>11s} "
          f"{'link ms/frame':>14s} {'boxes/frame':>12s}")
    for name, (h, w), r in rows:
        print(f"{name:28s} {h:>4d}x{w:<4d} {r['det']:8.2f} {r['track']:14.2f} {r['det'] / r['track']:10.2f}x "
              f"{r['link_ms']:14.1f} {r['boxes']:12.1f}")


if __name__ == "__main__":
    main()
