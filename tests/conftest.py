"""Shared fixtures: a tiny cached dataset whose only class signal is the direction of motion."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("KINETOSCOPE_PLAIN", "1")
# One intra-op thread: the tests run many small ops, where OpenMP spin-waiting across threads costs
# more than it gains (and is ruinous on a shared machine). KINETOSCOPE_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("KINETOSCOPE_TEST_THREADS", "1")))


def write_motion_dataset(root: Path, per_class: int = 24, frames: int = 8, size: int = 16, seed: int = 0) -> Path:
    """Two classes, ``left`` and ``right``: a 3-px square crossing the frame in that direction.

    Any single frame is ambiguous (the square appears at every position in both classes), so a
    model must use the order of frames. Splits: 2/3 train, 1/3 val.
    """
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord

    rng = np.random.default_rng(seed)
    store = DatasetStore(root)
    records = []
    for label, sign in (("left", -1), ("right", 1)):
        for i in range(per_class):
            video = np.zeros((frames, size, size, 1), dtype=np.uint8)
            row = rng.integers(2, size - 5)
            start = rng.integers(0, size - 3 - frames) if sign > 0 else rng.integers(frames, size - 3)
            for t in range(frames):
                col = start + sign * t
                video[t, row : row + 3, col : col + 3, 0] = 255
            vid = f"{label}_{i:03d}"
            store.write_frames(vid, video)
            split = "val" if i % 3 == 0 else "train"
            records.append(VideoRecord(video_id=vid, label=label, split=split, subject=f"s{i % 4}",
                                       fps=10.0, num_frames=frames, duration=frames / 10))
    store.write_records(records)
    store.write_meta({"name": "motion", "classes": ["left", "right"], "fps": 10, "size": [size, size],
                      "channels": 1, "frames": frames})
    return root


@pytest.fixture
def motion_dataset(tmp_path: Path) -> Path:
    return write_motion_dataset(tmp_path / "motion")


@pytest.fixture
def untrained_run(tmp_path: Path, motion_dataset: Path) -> Path:
    """A run directory with an untrained cnn3d on the motion dataset (weights + config only)."""
    import yaml

    from kinetoscope.models import create_model
    from kinetoscope.models.checkpoint import save_run_model

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    options = {"hidden": 4, "blocks": 2, "input_size": 16, "frames": 8}
    spec = {"name": "cnn3d", "num_classes": 2, "in_channels": 1, "options": options, "classes": ["left", "right"]}
    save_run_model(create_model("cnn3d", 2, 1, **options), run, spec)
    config = {"data": {"root": str(motion_dataset), "val_split": "val", "frames": 8}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run
