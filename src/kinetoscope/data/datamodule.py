"""One data pipeline: a run config -> its datasets, transforms and loaders.

Every command that reads a run's data goes through here — ``train`` (as a Lightning DataModule),
``evaluate``, ``explain``, ``predict``, ``cv`` and the suites — so "which videos are validation" and
"what does the model see" are decided once:

- **parts**: ``train``/``val``/``test`` are the ``data.<part>_subjects`` list when given
  (subject-exclusive folds, Broomé 2022 §3.2) and the ``data.<part>_split`` value of the
  ``split`` column otherwise;
- **training clips** get temporal jitter (``data.jitter``), frame-rate jitter
  (``data.frame_rate_jitter``) and, with ``data.augment``, a random resized crop to ``data.size``,
  a horizontal flip that negates flow u, colour jitter and optional Gaussian shading;
- **evaluation clips** get the matching deterministic view: resize to cover ``data.size`` and take
  the centre;
- **both** get the same normalisation: RGB standardised by ``data.normalize`` and flow scaled by
  ``data.flow_normalize``.

Reproducibility: the training order and every clip's random draws come from :class:`EpochSampler`,
a function of ``(train.seed, epoch)`` only, so a resumed run continues exactly where the interrupted
one was (with ``train.RngState`` restoring the global RNGs that dropout uses). Each DataLoader
worker's torch RNG is derived from the loader's seeded generator by PyTorch, and :func:`seed_worker`
seeds NumPy and ``random`` from that.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from kinetoscope.config import DataConfig, RunConfig
from kinetoscope.data.dataset import ClipDataset
from kinetoscope.data.multigrid import MultigridBatchSampler, MultigridStep, dataset_plan
from kinetoscope.data.transforms import (
    NORMALIZATIONS,
    CenterCrop,
    ColorJitter,
    Compose,
    FlowMinMax,
    GaussianShading,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    ResizeCover,
)

PARTS = ("train", "val", "test")
_KEEP: Any = object()  # "the config's own split"


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled training order and per-clip random seeds that depend only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so epoch ``e`` of a resumed run sees exactly
    the order and the augmentation draws of epoch ``e`` of an uninterrupted one. Yields
    ``(index, clip_seed)`` pairs that :class:`~kinetoscope.data.dataset.ClipDataset` understands; the
    seeds travel to DataLoader workers with the indices, so worker count does not change the draws."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        return iter(zip(order, seeds, strict=True))


def normalization(data: DataConfig, channels: int) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of ``data.normalize`` for ``channels``-channel frames, or ``None``.

    ``auto`` is resolved when a run starts (to the recipe of its ``init_from`` weights, see
    ``kinetoscope.train.fit``); an unresolved ``auto`` means none. Named recipes are RGB statistics: a
    one-channel (grey) dataset uses their channel mean."""
    value = data.normalize
    if value in ("none", "auto"):
        return None
    if value == "dataset":
        raise ValueError("data.normalize: dataset is resolved when training starts; this config was not")
    if isinstance(value, str):
        mean, std = NORMALIZATIONS[value]
        if channels == 1:
            return [float(np.mean(mean))], [float(np.mean(std))]
        if channels != len(mean):
            raise ValueError(f"data.normalize: {value!r} is for {len(mean)}-channel video; the data has {channels}")
        return list(mean), list(std)
    mean, std = value
    if len(mean) != channels:
        raise ValueError(
            f"data.normalize: {len(mean)} mean/std values for {channels}-channel video; give one per channel"
        )
    return list(mean), list(std)


def dataset_statistics(config: RunConfig, frames_per_video: int = 32) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation (in [0, 1] units) of the training part's frames, from up to
    ``frames_per_video`` evenly spaced frames of each video (``data.normalize: dataset``)."""
    from kinetoscope.data.cache import DatasetStore

    split, subjects = part_selection(config.data, "train")
    dataset = ClipDataset(config.data.root, split, subjects=subjects)
    store = DatasetStore(config.data.root)
    total = total_sq = None
    count = 0
    for record, n in zip(dataset.records, dataset.num_frames, strict=True):
        array = store.read_frames(record.video_id)
        picked = np.asarray(array[np.unique(np.linspace(0, n - 1, min(n, frames_per_video)).astype(int))],
                            dtype=np.float64) / 255.0
        del array
        pixels = picked.reshape(-1, picked.shape[-1])
        total = pixels.sum(0) if total is None else total + pixels.sum(0)
        total_sq = (pixels**2).sum(0) if total_sq is None else total_sq + (pixels**2).sum(0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-12))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def clip_transform(data: DataConfig, *, train: bool, channels: int) -> Compose | None:
    """The per-clip transform of a part: augmentation for training (``data.augment``), the matching
    deterministic resize + centre crop otherwise, then normalisation. ``None`` when nothing applies."""
    parts: list[Any] = []
    if data.size is not None:
        if train and data.augment:
            parts.append(RandomResizedCrop(data.size, scale=tuple(data.crop_scale)))
        else:
            parts += [ResizeCover(data.size), CenterCrop(data.size)]
    elif train and data.augment:
        raise ValueError("data.augment crops to data.size: set data.size (e.g. 112)")
    stats = normalization(data, channels)
    fused = False
    if train and data.augment:
        parts.append(RandomHorizontalFlip(0.5))
        if data.color_jitter:
            fused = stats is not None and not data.shading  # normalisation folded into the colour pass
            jitter = data.color_jitter
            parts.append(ColorJitter(jitter, jitter, jitter, 0.0, then_normalize=stats if fused else None))
    if train and data.shading:
        parts.append(GaussianShading(data.shading))
    if stats is not None and not fused:
        parts.append(Normalize(*stats))
    if data.flow_normalize == "minmax":
        parts.append(FlowMinMax())
    return Compose(parts) if parts else None


def part_selection(data: DataConfig, part: str) -> tuple[str | None, list[str] | None]:
    """``(split, subjects)`` of ``part``: the subject list when the config gives one, else the split."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    subjects = getattr(data, f"{part}_subjects")
    if subjects is not None:
        return None, list(subjects)
    return getattr(data, f"{part}_split"), None


def has_part(data: DataConfig, part: str) -> bool:
    split, subjects = part_selection(data, part)
    return split is not None or subjects is not None


def config_dataset(
    config: RunConfig,
    part: str,
    *,
    classes: list[str] | None = None,
    flow: bool | None = None,
    reverse: bool = False,
    root: str | Path | None = None,
    split: Any = _KEEP,
    train: bool | None = None,
) -> ClipDataset:
    """The ``ClipDataset`` of one part of a run config, with its sampling and transform.

    ``root`` evaluates the run's pipeline on another dataset (another domain): then ``split`` picks
    its videos (``None`` = all) and no subject list applies. ``train`` (default: ``part == "train"``)
    turns on the random augmentation and jitter."""
    data = config.data
    train = part == "train" if train is None else train
    if root is None:
        part_split, subjects = part_selection(data, part)
        if split is not _KEEP:
            part_split, subjects = split, None
        root = data.root
    else:
        part_split, subjects = (None if split is _KEEP else split), None
    dataset = ClipDataset(
        root,
        part_split,
        frames=data.frames,
        reverse=reverse,
        classes=classes,
        sampling=data.sampling,
        stride=data.stride,
        step=_eval_step(data) if not train else data.step,
        oversample=data.oversample,
        jitter=train and (data.jitter or data.frame_rate_jitter is not None),
        strides=data.frame_rate_jitter if train else None,
        flow=data.flow if flow is None else flow,
        subjects=subjects,
        seed=config.train.seed,
        clip_start=data.clip_start if train else "planned",
    )
    dataset.transform = clip_transform(data, train=train, channels=int(dataset.store.meta().get("channels", 3)))
    return dataset


def _eval_step(data: DataConfig) -> int:
    """Evaluation clips of a run trained with frame-rate jitter space their frames by the middle
    stride of the range (dense windows), so they span what training clips spanned on average."""
    if data.frame_rate_jitter is None or data.sampling != "dense":
        return data.step
    lo, hi = data.frame_rate_jitter
    return (lo + hi) // 2


class VideoDataModule(L.LightningDataModule):
    """The train/val/test datasets and loaders of a run config (see the module docstring).

    ``flow`` forces the flow stream on (two-stream models) even when ``data.flow`` is off; ``classes``
    fixes the label order (default: the training data's)."""

    def __init__(self, config: RunConfig, *, flow: bool | None = None, classes: list[str] | None = None) -> None:
        super().__init__()
        self.config = config
        self.flow = flow
        self.classes = classes
        self.datasets: dict[str, ClipDataset | None] = {}
        self._multigrid_plan: list[MultigridStep] | None = None

    def dataset(self, part: str) -> ClipDataset | None:
        """The part's dataset, built once; ``None`` when the config has no such part."""
        if part not in self.datasets:
            if not has_part(self.config.data, part):
                self.datasets[part] = None
            else:
                if part != "train" and self.classes is None and has_part(self.config.data, "train"):
                    self.dataset("train")  # label order of the training data
                ds = config_dataset(self.config, part, classes=self.classes, flow=self.flow)
                self.classes = self.classes or ds.classes
                self.datasets[part] = ds
        return self.datasets[part]

    def setup(self, stage: str | None = None) -> None:
        parts = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", PARTS)
        for part in parts:
            self.dataset(part)

    def loader(self, part: str, *, shuffle: bool = False, batch_size: int | None = None) -> DataLoader:
        dataset = self.dataset(part)
        if dataset is None:
            raise ValueError(f"the config has no {part} data: set data.{part}_split or data.{part}_subjects")
        data = self.config.data
        return DataLoader(
            dataset,
            batch_size=batch_size or data.batch_size,
            sampler=EpochSampler(len(dataset), self.config.train.seed) if shuffle else None,
            num_workers=data.num_workers,
            worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(self.config.train.seed),
            persistent_workers=data.num_workers > 0,
            pin_memory=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.config.train.multigrid != "none":
            return self.multigrid_loader()
        return self.loader("train", shuffle=True)

    def multigrid_plan(self) -> list[MultigridStep]:
        """The multigrid iterations of one training epoch (``train.multigrid``; Stergiou 2021 §4.4.1)."""
        if self._multigrid_plan is None:
            self._multigrid_plan = dataset_plan(self.dataset("train"), self.config.data.batch_size,
                                                self.config.train.multigrid)
        return self._multigrid_plan

    def multigrid_loader(self) -> DataLoader:
        """Training batches of the multigrid plan's sizes, a fresh permutation every epoch; the shapes and
        learning-rate factors are applied by ``kinetoscope.train.schedules.MultigridCallback``."""
        data = self.config.data
        sampler = MultigridBatchSampler(EpochSampler(len(self.dataset("train")), self.config.train.seed),
                                        self.multigrid_plan())
        return DataLoader(self.dataset("train"), batch_sampler=sampler, num_workers=data.num_workers,
                          worker_init_fn=seed_worker, persistent_workers=data.num_workers > 0, pin_memory=False)

    def val_dataloader(self) -> DataLoader | list:
        return self.loader("val") if self.dataset("val") is not None else []  # [] = no validation

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
