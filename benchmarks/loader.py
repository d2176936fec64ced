"""Loader throughput: the frame cache vs decoding each clip's video with PyAV, vs what cnn3d consumes.

Clips of 16 frames at 112x112 (uniform over the video), batch 8, DataLoader with 0, 1 and 2 workers:

* cache   -- ``ClipDataset`` over the memory-mapped ``frames/<id>.npy`` written by ``prepare_dataset``;
* decode  -- the same clips decoded from the source mp4 with PyAV (``read_video``) on every access;
* augmented -- the cache through the training pipeline of a run config (``config_dataset``: temporal
  jitter, random resized crop back to 112, flip, colour jitter, Kinetics normalisation);
* cnn3d   -- clips/s of one training step (forward, backward, SGD) of
  ``create_model("cnn3d", num_classes=5, in_channels=3, hidden=16, frames=16, input_size=112)``.

Goals: cache >= 20x decode, cache >= 10x cnn3d; augmentation costs < 25 % of the cache's throughput and
the augmented loader stays >= 10x cnn3d. Peak RSS (measured in fresh subprocesses) of
a full pass over 100 vs 1,000 cached videos should stay flat.

    .venv/bin/python benchmarks/loader.py [--videos 24] [--passes 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.dataset import ClipDataset
from kinetoscope.data.index import VideoRecord
from kinetoscope.data.prepare import prepare_dataset
from kinetoscope.data.sampling import uniform_indices
from kinetoscope.data.video import read_video, write_video

FRAMES, SIZE, BATCH = 16, 112, 8


def make_videos(folder: Path, count: int, frames: int = 160, h: int = 240, w: int = 320) -> None:
    """``count`` mp4 videos (mpeg4, 25 fps, 320x240, 6.4 s: the size of a typical UCF101 clip) of a
    moving square over a random background."""
    rng = np.random.default_rng(0)
    for k in range(count):
        video = np.repeat(rng.integers(0, 60, (1, h, w, 3), dtype=np.uint8), frames, axis=0)
        for t in range(frames):
            x = (3 * t + 7 * k) % (w - 20)
            video[t, 40:60, x : x + 20] = 255
        write_video(folder / f"class{k % 5}" / f"v{k:03d}.mp4", video, fps=25)


class DecodeDataset(Dataset):
    """The no-cache baseline: decode and resize the whole video with PyAV for every clip."""

    def __init__(self, records: list[VideoRecord]) -> None:
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        frames = read_video(self.records[i].path, size=(SIZE, SIZE))
        idx = uniform_indices(frames.shape[0], FRAMES)
        video = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(3, 0, 1, 2).float().div_(255.0)
        return {"video": video, "label": 0}


def clips_per_second(dataset: Dataset, workers: int, passes: int) -> float:
    loader = DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    next(iter(loader))  # warm-up: worker start-up and page cache
    count, start = 0, time.perf_counter()
    for _ in range(passes):
        for batch in loader:
            count += batch["video"].shape[0]
    return count / (time.perf_counter() - start)


def augmented_dataset(root: Path) -> ClipDataset:
    """The cache through a run config's training pipeline, as ``kinetoscope train`` builds it."""
    from kinetoscope.config import build_config
    from kinetoscope.data.datamodule import config_dataset

    # class folders leave the split column empty: the "" split is every video
    config = build_config({"data": {"root": str(root), "frames": FRAMES, "size": SIZE, "augment": True,
                                    "jitter": True, "normalize": "kinetics", "train_split": ""}})
    return config_dataset(config, "train")


def cnn3d_clips_per_second(steps: int = 6) -> float:
    from kinetoscope.models import create_model

    model = create_model("cnn3d", num_classes=5, in_channels=3, hidden=16, frames=FRAMES, input_size=SIZE)
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.rand(BATCH, 3, FRAMES, SIZE, SIZE)
    y = torch.randint(0, 5, (BATCH,))

    def step() -> None:
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def write_small_store(root: Path, num_videos: int) -> None:
    """``num_videos`` cached videos of 32 frames at 112x112 (1.2 MB each)."""
    store = DatasetStore(root)
    frames = np.random.default_rng(0).integers(0, 255, (32, SIZE, SIZE, 3), dtype=np.uint8)
    records = []
    for k in range(num_videos):
        store.write_frames(f"v{k:04d}", frames)
        records.append(VideoRecord(f"v{k:04d}", f"c{k % 5}", subject=str(k % 7), num_frames=32))
    store.write_records(records)
    store.write_meta({"name": "rss", "classes": [f"c{i}" for i in range(5)], "fps": 2.0})


def rss_child(root: str) -> None:
    """Subprocess body: one pass over every clip of the store at ``root``; print RSS figures in MB."""

    def status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024

    before = status("VmRSS")
    dataset = ClipDataset(root, frames=FRAMES)
    n = sum(batch["video"].shape[0] for batch in DataLoader(dataset, batch_size=BATCH, num_workers=0))
    print(
        json.dumps(
            {
                "videos": len(dataset.records),
                "clips": n,
                "rss_before_mb": before,
                "peak_rss_mb": status("VmHWM"),
            }
        )
    )


def measure_rss(tmp: Path, num_videos: int) -> dict:
    root = tmp / f"rss{num_videos}"
    write_small_store(root, num_videos)
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(root)], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child)
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        src, cache = Path(tmp) / "src", Path(tmp) / "cache"
        make_videos(src, args.videos)
        t0 = time.perf_counter()
        prepare_dataset(src, cache, format="folders", size=(SIZE, SIZE))
        prepare_s = time.perf_counter() - t0
        cached = ClipDataset(cache, frames=FRAMES)
        augmented = augmented_dataset(cache)
        decoding = DecodeDataset(DatasetStore(cache).records())
        rows = []
        for workers in (0, 1, 2):
            c = clips_per_second(cached, workers, args.passes * 4)
            a = clips_per_second(augmented, workers, args.passes * 4)
            d = clips_per_second(decoding, workers, max(1, args.passes // 2))
            rows.append((workers, c, a, d))
    model_rate = cnn3d_clips_per_second()
    print(
        f"\n{args.videos} mp4 videos (160 frames, 320x240, 25 fps); clips {FRAMES}x{SIZE}x{SIZE}, "
        f"batch {BATCH}; prepare took {prepare_s:.1f} s\n"
    )
    print(
        f"{'workers':>7} | {'cache clips/s':>13} | {'augmented':>9} | {'decode clips/s':>14} | "
        f"{'cache/decode':>12} | {'aug/cache':>9} | {'cache/cnn3d':>11} | {'aug/cnn3d':>9}"
    )
    print("-" * 108)
    for workers, c, a, d in rows:
        print(f"{workers:>7} | {c:>13.1f} | {a:>9.1f} | {d:>14.1f} | {c / d:>11.1f}x | {a / c:>8.2f}x | "
              f"{c / model_rate:>10.1f}x | {a / model_rate:>8.1f}x")
    print(f"\ncnn3d training step (hidden=16, 1 thread): {model_rate:.1f} clips/s")
    with tempfile.TemporaryDirectory() as tmp:
        small, large = measure_rss(Path(tmp), 100), measure_rss(Path(tmp), 1000)
    print(f"\n{'videos':>6} | {'clips':>5} | {'RSS before (MB)':>15} | {'peak RSS (MB)':>13}")
    print("-" * 50)
    for r in (small, large):
        print(f"{r['videos']:>6} | {r['clips']:>5} | {r['rss_before_mb']:>15.1f} | {r['peak_rss_mb']:>13.1f}")
    print(f"peak RSS ratio 1000/100 videos: {large['peak_rss_mb'] / small['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
