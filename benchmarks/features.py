"""Feature extraction throughput: ``extract_features`` vs a plain batched forward of the same model.

A cached dataset of ``--videos`` videos of ``--frames`` frames at 112x112 (written straight into the
frame cache), dense windows of 16 frames with stride 16, batch 16, one thread:

* plain    -- the windows already stacked in memory as float tensors, ``model(batch)`` under
  ``inference_mode``: the model's own speed, nothing else;
* features -- ``kinetoscope.features.run.extract_features`` from the memory-mapped cache to one
  ``.npy`` per video (window cutting, hook, pooling, atomic writes, windows.csv included).

Goal: features / plain >= 0.8 (extraction overhead <= 25 %).

    .venv/bin/python benchmarks/features.py [--model r2plus1d_18] [--videos 6] [--frames 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.index import VideoRecord
from kinetoscope.data.sampling import dense_windows
from kinetoscope.features.run import extract_features
from kinetoscope.models import create_model
from kinetoscope.models.checkpoint import save_run_model

WINDOW, SIZE, BATCH = 16, 112, 16


def make_dataset(root: Path, videos: int, frames: int) -> None:
    rng = np.random.default_rng(0)
    store = DatasetStore(root)
    records = []
    for k in range(videos):
        store.write_frames(f"v{k}", rng.integers(0, 255, (frames, SIZE, SIZE, 3), dtype=np.uint8))
        records.append(VideoRecord(video_id=f"v{k}", label="a", fps=25.0, num_frames=frames, duration=frames / 25))
    store.write_records(records)
    store.write_meta({"name": "bench", "classes": ["a"], "fps": 25, "size": [SIZE, SIZE], "channels": 3})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="r2plus1d_18")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("KINETOSCOPE_PLAIN", "1")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "data", args.videos, args.frames)
        model = create_model(args.model, 10, 3).eval()
        spec = {"name": args.model, "num_classes": 10, "in_channels": 3, "options": {}, "classes": list("abcdefghij")}
        save_run_model(model, tmp / "run", spec)
        (tmp / "run" / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(tmp / "data")}}))

        store = DatasetStore(tmp / "data")
        clips = []
        for record in store.records():
            frames = store.read_frames(record.video_id, mmap=False)
            for w in dense_windows(len(frames), WINDOW, WINDOW):
                clips.append(torch.from_numpy(frames[w]).permute(3, 0, 1, 2).float() / 255)
        batches = [torch.stack(clips[i : i + BATCH]) for i in range(0, len(clips), BATCH)]
        with torch.inference_mode():
            model(batches[0][:2])  # warm-up
            start = time.perf_counter()
            for batch in batches:
                model(batch)
            plain = len(clips) / (time.perf_counter() - start)

        start = time.perf_counter()
        result = extract_features(tmp / "run", [tmp / "data"], tmp / "feats", window=WINDOW, batch_size=BATCH)
        features = result["windows"] / (time.perf_counter() - start)
        assert result["windows"] == len(clips)

    print(f"model {args.model}, {len(clips)} windows of {WINDOW}x{SIZE}x{SIZE}, batch {BATCH}, 1 thread")
    print(f"{'path':<10} {'windows/s':>10}")
    print(f"{'plain':<10} {plain:>10.2f}")
    print(f"{'features':<10} {features:>10.2f}")
    print(f"features / plain = {features / plain:.2f}  (goal >= 0.8)")


if __name__ == "__main__":
    main()
