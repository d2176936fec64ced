"""Clip datasets over a cached dataset directory (see ``kinetoscope.data.cache``).

A sample is the batch dict of DESIGN.md: ``video`` float32 ``[C, T, H, W]`` in [0, 1], ``label``
(class index), ``video_id``, ``subject``, ``clip_index``; ``flow`` when the store has it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kinetoscope.data.cache import DatasetStore


def uniform_indices(num_frames: int, frames: int) -> np.ndarray:
    """``frames`` indices spread evenly over ``[0, num_frames)``."""
    if frames >= num_frames:
        return np.arange(num_frames)
    return np.linspace(0, num_frames - 1, frames).round().astype(np.int64)


class ClipDataset(Dataset):
    """One clip per cached video (uniform ``frames`` indices, or all frames).

    ``reverse=True`` returns every clip with its frames in reverse order (the reversal probe,
    seed 001 [P] §4.2). ``classes`` fixes the label order (default: the store's own).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        frames: int | None = None,
        reverse: bool = False,
        classes: list[str] | None = None,
    ) -> None:
        self.store = DatasetStore(root)
        self.classes = list(classes) if classes is not None else self.store.classes
        self.records = self.store.records(split)
        if not self.records:
            raise ValueError(f"no videos in split {split!r} of {self.store.annotations_path}")
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({r.label for r in self.records if r.label not in index})
        if unknown:
            raise ValueError(
                f"{self.store.annotations_path}: label(s) {unknown} not among the classes {self.classes}"
            )
        self.labels = [index[r.label] for r in self.records]
        self.frames = frames
        self.reverse = reverse

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        array = self.store.read_frames(record.video_id)
        idx = uniform_indices(array.shape[0], self.frames) if self.frames else np.arange(array.shape[0])
        if self.reverse:
            idx = idx[::-1]
        clip = torch.from_numpy(np.ascontiguousarray(array[idx]))  # [T, H, W, C] uint8
        video = clip.permute(3, 0, 1, 2).float().div_(255.0)
        return {
            "video": video,
            "label": self.labels[i],
            "video_id": record.video_id,
            "subject": record.subject,
            "clip_index": 0,
        }
