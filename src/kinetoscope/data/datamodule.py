"""A Lightning DataModule over a cached dataset, with reproducible shuffling and worker seeding.

Splits come either from the ``split`` column (``train_split``/``val_split``/``test_split``) or from a
subject-exclusive :class:`~kinetoscope.data.splits.Fold` (seed 000 [T] §3.2 LOSO). Training clips
use jitter and the train augmentation; validation and test clips are deterministic. The seed-000
oversampling (dense windows) applies to every part, as in [T] §3.3.

Reproducibility: the shuffle order comes from a ``torch.Generator`` seeded with ``seed``; each
DataLoader worker's torch RNG is derived from it by PyTorch, and :func:`seed_worker` seeds NumPy and
``random`` from that, so a run with the same seed and worker count yields the same batches.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from kinetoscope.data.dataset import ClipDataset
from kinetoscope.data.splits import Fold
from kinetoscope.data.transforms import eval_transforms, train_transforms


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class VideoDataModule(L.LightningDataModule):
    """Train/val/test ``ClipDataset`` s and their loaders. ``augment`` gives training clips a random
    start (temporal jitter) and, with ``size`` (crop), the spatial train augmentation; evaluation gets a
    centre crop to ``size``. ``size=None`` leaves frames as cached."""

    def __init__(
        self,
        root: str | Path,
        frames: int | None = 16,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        size: int | tuple[int, int] | None = None,
        augment: bool = True,
        sampling: str = "uniform",
        stride: int | None = None,
        oversample: bool = False,
        flow: bool = False,
        fold: Fold | None = None,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        classes: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.root, self.frames, self.batch_size = Path(root), frames, batch_size
        self.num_workers, self.seed, self.size, self.augment = num_workers, seed, size, augment
        self.sampling, self.stride, self.oversample, self.flow = sampling, stride, oversample, flow
        self.fold = fold
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.classes = classes
        self.datasets: dict[str, ClipDataset] = {}

    def _dataset(self, part: str) -> ClipDataset | None:
        if part in self.datasets:
            return self.datasets[part]
        train = part == "train"
        if self.fold is not None:
            subjects = {
                "train": self.fold.train_subjects,
                "val": self.fold.val_subjects,
                "test": self.fold.test_subjects,
            }[part]
            if not subjects:
                return None
            split, selection = None, {"subjects": subjects}
        else:
            split = self.splits[part]
            if split is None:
                return None
            selection = {}
        transform = None
        if self.size is not None:
            transform = (
                train_transforms(self.size) if (train and self.augment) else eval_transforms(self.size)
            )
        self.datasets[part] = ClipDataset(
            self.root,
            split=split,
            frames=self.frames,
            classes=self.classes,
            sampling=self.sampling,
            stride=self.stride,
            oversample=self.oversample,
            jitter=train and self.augment,
            transform=transform,
            flow=self.flow,
            seed=self.seed,
            **selection,
        )
        if self.classes is None:
            self.classes = self.datasets[part].classes
        return self.datasets[part]

    def setup(self, stage: str | None = None) -> None:
        for part in ("train", "val", "test"):
            self._dataset(part)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        dataset = self._dataset(part)
        if dataset is None:
            raise ValueError(f"no {part} data: set {part}_split or pass a fold with {part} subjects")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
