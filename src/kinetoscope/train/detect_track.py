"""Training Detect & Track on frame pairs (Feichtenhofer 2017 §8.5.2) into a kinetoscope run directory.

Each training sample is two frames ``t, t + tau`` of one video of a detection dataset
(:mod:`kinetoscope.data.objects`), both annotated, flipped horizontally together at random, with
their boxes, classes and identities; the loss is Eq. 8.1 plus the RPN's
(:meth:`~kinetoscope.models.detect_track.DetectTrack.losses`), summed with weight 1. The document
fine-tunes an ImageNet R-FCN with SGD (lr 1e-4 for 40K iterations, 1e-5 for 20K, batch 4) on
adjacent VID frames, alternating with DET images fed as two identical frames; without pretrained
weights or DET here, the default is AdamW from scratch with the learning rate dropped 10x for the
last third of the steps (``optimizer="sgd"`` gives the document's optimiser).

Run directory: ``config.yaml`` (``task: detect_track``), ``model.json`` + ``model.safetensors``,
``metrics.csv`` (losses every ``log_every`` steps), ``checkpoints/last.ckpt`` (``resume=True``
continues from it), ``summary.json``.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import Dataset

from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text, log, quiet_libraries

MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as for the trunk's usual initialisation
STD = (0.229, 0.224, 0.225)


def normalise_frames(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[3, T, H, W]`` normalised by the ImageNet mean and std."""
    x = torch.from_numpy(np.array(frames, dtype=np.float32)).div_(255)  # a copy: cached frames are read-only
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    x = (x - torch.tensor(MEAN)) / torch.tensor(STD)
    return x.permute(3, 0, 1, 2).contiguous()


class FramePairDataset(Dataset):
    """Pairs ``(t, t + tau)`` of annotated frames of every video of ``split``. Items:
    ``(frames [3, 2, H, W], [targets at t, targets at t + tau])`` (see ``VideoObjects.targets``)."""

    def __init__(self, root: str | Path, split: str | None, tau: int = 1, flip: bool = True):
        from kinetoscope.data.cache import DatasetStore
        from kinetoscope.data.objects import load_detection_dataset

        self.store = DatasetStore(root)
        self.classes, self.objects = load_detection_dataset(root, split)
        self.flip = flip
        self.pairs = [(vid, t, t + tau) for vid, video in self.objects.items()
                      for t in range(len(video.frames) - tau) if video.annotated[t] and video.annotated[t + tau]]
        if not self.pairs:
            raise ValueError(f"{root}: no annotated frame pairs (tau={tau}) in split {split!r}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
        vid, a, b = self.pairs[index]
        frames = normalise_frames(self.store.read_frames(vid)[[a, b]])
        targets = [self.objects[vid].targets(t, self.classes) for t in (a, b)]
        if self.flip and random.random() < 0.5:
            width = frames.shape[-1]
            frames = frames.flip(-1)
            for target in targets:
                boxes = target["boxes"]
                target["boxes"] = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)
        return frames, targets


def collate_pairs(batch: list[tuple[torch.Tensor, list[dict[str, torch.Tensor]]]]) -> tuple[torch.Tensor, list]:
    return torch.stack([frames for frames, _ in batch]), [targets for _, targets in batch]


def fit_detect_track(
    data: str | Path,
    out_dir: str | Path,
    *,
    model: str = "detect_track_cpu",
    model_options: dict[str, Any] | None = None,
    steps: int = 600,
    batch_size: int = 2,
    lr: float = 1e-3,
    optimizer: str = "adamw",
    tau: int = 1,
    train_split: str = "train",
    val_split: str = "val",
    seed: int = 0,
    threads: int | None = 1,
    log_every: int = 20,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Train D&T on ``data`` for ``steps`` iterations; returns the run directory ``out_dir``."""
    import yaml
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    from kinetoscope.models import create_model
    from kinetoscope.models.checkpoint import save_run_model
    from kinetoscope.models.weights import load_torch_file

    run_dir = Path(out_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not (resume or overwrite):
        raise FileExistsError(f"run directory {run_dir} is not empty; pass resume=True (--resume) or overwrite=True")
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer={optimizer!r}; expected 'adamw' or 'sgd'")
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    pl.seed_everything(seed, workers=True, verbose=False)
    train_set = FramePairDataset(data, train_split, tau=tau)
    options = dict(model_options or {})
    spec = {"name": model, "num_classes": len(train_set.classes), "in_channels": 3, "options": options,
            "classes": train_set.classes}
    config = {"task": "detect_track", "name": run_dir.name,
              "data": {"root": str(Path(data).resolve()), "train_split": train_split, "val_split": val_split,
                       "tau": tau},
              "model": {"name": model, "options": options},
              "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "optimizer": optimizer, "seed": seed}}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    network = create_model(model, len(train_set.classes), 3, **options)
    module = DetectTrackModule(network, lr=lr, optimizer=optimizer, steps=steps, log_every=log_every)
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate_pairs,
                        generator=torch.Generator().manual_seed(seed))
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=100)
    trainer = pl.Trainer(default_root_dir=run_dir, max_steps=steps, max_epochs=-1, accelerator="cpu", devices=1,
                         callbacks=[last], logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    started = time.perf_counter()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    resumed = resume and ckpt.is_file()
    start_step = load_torch_file(ckpt)["global_step"] if resumed else 0  # damaged/unsafe: one line
    trainer.fit(module, loader, ckpt_path=ckpt if resumed else None)
    trainer.save_checkpoint(ckpt)
    seconds = time.perf_counter() - started
    save_run_model(network, run_dir, spec)
    atomic_write_text(run_dir / "metrics.csv", csv_text(["step", *module.loss_names], module.history))
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.update({"name": run_dir.name, "task": "detect_track", "model": model, "model_options": options,
                    "classes": train_set.classes, "params": sum(p.numel() for p in network.parameters()),
                    "steps": trainer.global_step, "resumed_from_step": start_step, "train_pairs": len(train_set),
                    "train_seconds": round(seconds + (summary.get("train_seconds", 0.0) if resume else 0.0), 2),
                    "final_losses": dict(zip(module.loss_names, module.history[-1][1:], strict=True))
                    if module.history else {}})
    atomic_write_json(summary_path, summary)
    return run_dir


class DetectTrackModule(pl.LightningModule):
    """The D&T objective on frame pairs; logs the mean of each loss every ``log_every`` steps."""

    loss_names = ("loss", "rpn_cls", "rpn_reg", "cls", "reg", "track")

    def __init__(self, model: torch.nn.Module, lr: float, optimizer: str, steps: int, log_every: int):
        super().__init__()
        self.model, self.lr, self.optimizer_name, self.steps, self.log_every = model, lr, optimizer, steps, log_every
        self.history: list[list[float]] = []
        self._window: list[list[float]] = []

    def training_step(self, batch: tuple[torch.Tensor, list], batch_index: int) -> torch.Tensor:
        frames, targets = batch
        losses = self.model(frames, targets)
        loss = sum(losses.values())
        self._window.append([float(loss.detach()), *(float(losses[k].detach()) for k in self.loss_names[1:])])
        if len(self._window) == self.log_every:
            self.history.append([self.global_step + 1, *np.round(np.mean(self._window, 0), 5).tolist()])
            self._window = []
            text = " ".join(f"{k} {v:.3f}" for k, v in zip(self.loss_names, self.history[-1][1:], strict=True))
            log(f"step {self.global_step + 1}/{self.steps}  {text}", tag="detect-track")
        return loss

    def configure_optimizers(self) -> Any:
        if self.optimizer_name == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=1e-4)
        drop = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, 2 * self.steps // 3)], gamma=0.1)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": drop, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["loss_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("loss_history", []))

