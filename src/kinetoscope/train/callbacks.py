"""Lightning callbacks of a run directory."""

from __future__ import annotations

import csv
import io
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from kinetoscope.utils import atomic_write_text


class EpochTable(pl.Callback):
    """Write ``metrics.csv``: one row per epoch (train/val loss, accuracy, macro-F1, lr, seconds).

    Rows travel in the checkpoint, so a resumed run keeps its history.
    """

    columns = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr", "seconds"]

    def __init__(self, path: Path, echo: bool = False, max_epochs: int | None = None) -> None:
        self.path = Path(path)
        self.echo, self.max_epochs = echo, max_epochs
        self.rows: list[dict[str, Any]] = []
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else ""
        row: dict[str, Any] = {"epoch": trainer.current_epoch, "lr": lr,
                               "seconds": round(time.perf_counter() - self._start, 3)}
        for key in self.columns[1:6]:
            row[key] = round(metrics[key], 6) if key in metrics else ""
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())
        if self.echo:
            print(self.line(row), file=sys.stderr, flush=True)

    def line(self, row: dict[str, Any]) -> str:
        """``epoch 3/12  loss 0.512  acc 0.800  val_loss 0.401  val_acc 0.900  val_f1 0.897  lr 1.0e-03  12.3 s``"""
        total = f"/{self.max_epochs}" if self.max_epochs else ""
        parts = [f"epoch {int(row['epoch']) + 1}{total}"]
        for key, label in (("train_loss", "loss"), ("train_acc", "acc"), ("val_loss", "val_loss"),
                           ("val_acc", "val_acc"), ("val_f1", "val_f1")):
            if row.get(key) != "":
                parts.append(f"{label} {float(row[key]):.3f}")
        if row.get("lr") != "":
            parts.append(f"lr {float(row['lr']):.1e}")
        parts.append(f"{row['seconds']:.1f} s")
        return "  ".join(parts)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


class RngState(pl.Callback):
    """Carry every random number generator that training consumes through checkpoints, so a resumed
    run continues bit for bit where the interrupted one stopped: Python's ``random``, NumPy's global
    RNG, torch's CPU and accelerator RNGs (dropout), and the epoch of the data order
    (:class:`~kinetoscope.data.datamodule.EpochSampler`, also found inside Lightning's DDP wrapper).
    States are stored as tensors and plain lists, so checkpoints still load with ``weights_only=True``."""

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        for sampler in _epoch_samplers(trainer.train_dataloader):
            sampler.set_epoch(trainer.current_epoch)

    def state_dict(self) -> dict[str, Any]:
        import random

        import numpy as np
        import torch

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "python_gauss": random.getstate()[2],
            "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "numpy_rest": [int(pos), int(has_gauss), float(gauss)],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        import random

        import numpy as np
        import torch

        if not state_dict:
            return
        random.setstate((state_dict["python_version"], tuple(state_dict["python"]), state_dict["python_gauss"]))
        pos, has_gauss, gauss = state_dict["numpy_rest"]
        np.random.set_state(("MT19937", state_dict["numpy"].numpy().astype(np.uint32), int(pos), int(has_gauss),
                             float(gauss)))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def _epoch_samplers(loader: Any) -> list[Any]:
    """The :class:`EpochSampler` s behind a train dataloader (directly, or wrapped for DDP)."""
    found = []
    for sampler in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)  # lightning's DistributedSamplerWrapper
        for candidate in (sampler, inner):
            if candidate is not None and hasattr(candidate, "set_epoch") and type(candidate).__name__ == "EpochSampler":
                found.append(candidate)
    return found
