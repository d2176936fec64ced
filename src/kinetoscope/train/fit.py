"""``kinetoscope train``: build data, model and a Lightning Trainer from a RunConfig; write the run dir.

Run directory (DESIGN.md): config.yaml, metrics.csv (one row per epoch), checkpoints/{best,last}.ckpt,
model.safetensors + model.json (best weights), summary.json. Predictions are written afterwards by
``kinetoscope.evaluate.predict_run`` (the CLI and the demo call both).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from kinetoscope.config import RunConfig, load_config
from kinetoscope.utils import atomic_write_json, atomic_write_text


class RunDirError(FileExistsError):
    """The run directory holds an earlier run and neither ``--overwrite`` nor ``--resume`` was given."""


def is_child_process() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they re-run the command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def prepare_run_dir(config: RunConfig, overwrite: bool = False, resume: bool = False) -> Path:
    run_dir = config.run_dir
    if is_child_process():
        return run_dir
    if resume:
        if not (run_dir / "checkpoints" / "last.ckpt").is_file():
            raise FileNotFoundError(f"cannot resume: {run_dir / 'checkpoints' / 'last.ckpt'} does not exist")
        # the run continues under this config (e.g. a larger max_epochs): config.yaml must say so
        atomic_write_text(run_dir / "config.yaml", config.to_yaml())
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(
                f"run directory {run_dir} is not empty; pass --overwrite to replace it or --resume to continue"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    return run_dir


def model_spec(config: RunConfig, dataset_meta: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Model name, sizes and options, filling ``frames``/``input_size`` from the data when the model
    takes them and the config leaves them out."""
    from kinetoscope.models import model_options

    options = dict(config.model.options)
    accepted = model_options(config.model.name)
    size = dataset_meta.get("size")
    if "input_size" in accepted and "input_size" not in options and size:
        options["input_size"] = int(size[0] if isinstance(size, list | tuple) else size)
    frames = config.data.frames or dataset_meta.get("frames")
    if "frames" in accepted and "frames" not in options and frames:
        options["frames"] = int(frames)
    return {
        "name": config.model.name,
        "num_classes": len(classes),
        "in_channels": int(dataset_meta.get("channels", 3)),
        "options": options,
        "classes": classes,
    }


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def fit(config: RunConfig, overwrite: bool = False, resume: bool = False) -> Path:
    """Train ``config`` and return the run directory."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
    from torch.utils.data import DataLoader

    from kinetoscope.models import create_model
    from kinetoscope.models.checkpoint import save_run_model
    from kinetoscope.train.callbacks import EpochTable
    from kinetoscope.train.module import VideoClassifier
    from kinetoscope.utils import is_interactive

    run_dir = prepare_run_dir(config, overwrite=overwrite, resume=resume)
    pl.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)

    data = config.data
    train_set = run_dataset(config, "train")
    spec = model_spec(config, train_set.store.meta(), train_set.classes)
    model = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"])
    flow = data.flow or "flow" in getattr(model, "streams", ("rgb",))
    if flow and not data.flow:
        train_set = run_dataset(config, "train", flow=True)
    validate = data.val_split is not None or data.val_subjects is not None
    val_set = run_dataset(config, "val", classes=train_set.classes, flow=flow) if validate else None
    frozen = prepare_weights(model, config.train.init_from, config.train.trainable)
    module = VideoClassifier(model, spec["num_classes"], config.optim, loss=config.train.loss)

    loader_args = {"batch_size": data.batch_size, "num_workers": data.num_workers,
                   "persistent_workers": data.num_workers > 0}
    generator = torch.Generator().manual_seed(config.train.seed)
    train_loader = DataLoader(train_set, shuffle=True, generator=generator, **loader_args)
    val_loader = DataLoader(val_set, shuffle=False, **loader_args) if val_set is not None else None

    mode = "min" if config.train.monitor == "val_loss" else "max"
    monitor = config.train.monitor if validate else None  # no validation: keep the last epoch
    best_ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=monitor,
                                mode=mode, save_last=True, save_top_k=1, enable_version_counter=False)
    callbacks = [best_ckpt, EpochTable(run_dir / "metrics.csv")]
    if validate:
        patience = config.train.patience
        callbacks.append(EarlyStopping(monitor=config.train.monitor, mode=mode, patience=patience))
    if frozen:
        callbacks.append(frozen_batchnorm_callback(frozen))
    if config.train.progress:
        callbacks.append(RichProgressBar() if is_interactive() else TQDMProgressBar(refresh_rate=0))
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=config.train.max_epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        strategy=config.train.strategy,
        precision=config.train.precision,
        gradient_clip_val=config.train.gradient_clip,
        limit_train_batches=config.train.limit_train_batches,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=config.train.progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn",
    )
    started = time.perf_counter()
    ckpt_path = run_dir / "checkpoints" / "last.ckpt" if resume else None
    trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    if trainer.global_rank != 0:
        return run_dir

    best_path = best_ckpt.best_model_path or str(run_dir / "checkpoints" / "last.ckpt")
    state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    save_run_model(module.model, run_dir, spec)

    best_score = best_ckpt.best_model_score
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    stop = "max_epochs"
    if module.nonfinite_step is not None:
        stop = f"non-finite loss at step {module.nonfinite_step}; kept the last good checkpoint"
    elif trainer.early_stopping_callback is not None and trainer.early_stopping_callback.stopped_epoch:
        stop = f"early stopping at epoch {trainer.early_stopping_callback.stopped_epoch}"
    summary.update({
        "name": config.name,
        "model": spec["name"],
        "model_options": spec["options"],
        "classes": spec["classes"],
        "params": sum(p.numel() for p in model.parameters()),
        "monitor": config.train.monitor,
        "best_val": float(best_score) if best_score is not None else None,
        "best_val_acc": _best_from_table(run_dir / "metrics.csv", "val_acc"),
        "best_checkpoint": Path(best_path).name,
        "best_epoch": _best_epoch(run_dir / "metrics.csv", monitor, mode),
        "epochs_trained": trainer.current_epoch,
        "stopped_by": stop,
        "train_seconds": round(seconds + summary.get("train_seconds", 0.0) if resume else seconds, 2),
        "data": {"root": str(data.root), "train_videos": len(train_set),
                 "val_videos": len(val_set) if val_set is not None else 0,
                 "train_subjects": sorted({r.subject for r in train_set.records}),
                 "val_subjects": sorted({r.subject for r in val_set.records}) if val_set is not None else []},
        "trainable": config.train.trainable,
        "commit": _git_commit(),
        "torch": torch.__version__,
    })
    atomic_write_json(summary_path, summary)
    if module.nonfinite_step is not None:
        print(f"warning: training stopped: {stop} ({run_dir / 'checkpoints'})")
    return run_dir


def run_dataset(config: RunConfig, part: str, classes: list[str] | None = None, flow: bool | None = None,
                reverse: bool = False) -> Any:
    """The ``ClipDataset`` of one part (train/val/test) of a config: its split, or its subject list
    (``data.<part>_subjects``, which takes precedence over the split column); sampling, stride,
    oversampling and flow as configured."""
    from kinetoscope.data.dataset import ClipDataset

    data = config.data
    subjects = getattr(data, f"{part}_subjects")
    split = None if subjects is not None else getattr(data, f"{part}_split")
    return ClipDataset(data.root, split, frames=data.frames, reverse=reverse, classes=classes,
                       sampling=data.sampling, stride=data.stride, oversample=data.oversample,
                       flow=data.flow if flow is None else flow, subjects=subjects, seed=config.train.seed)


def prepare_weights(model: Any, init_from: Path | None, trainable: list[str] | None) -> list[Any]:
    """Load ``init_from`` (a run directory's ``model.safetensors`` or a ``.safetensors`` file) into
    ``model`` and freeze every parameter whose name starts with none of ``trainable`` (head-only
    fine-tuning, seed 000 [T] §3.3). Returns the BatchNorm modules left entirely frozen."""
    from torch import nn

    from kinetoscope.models.weights import load_safetensors

    if init_from is not None:
        path = Path(init_from)
        path = path / "model.safetensors" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"train.init_from: {path} is missing (give a run dir or .safetensors)")
        load_safetensors(model, path)
    if not trainable:
        return []
    names = [n for n, _ in model.named_parameters()]
    unknown = [p for p in trainable if not any(n.startswith(p) for n in names)]
    if unknown:
        raise ValueError(f"train.trainable: no parameter name starts with {unknown}; e.g. {names[-3:]}")
    for name, param in model.named_parameters():
        param.requires_grad_(any(name.startswith(p) for p in trainable))
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not any(p.requires_grad for p in m.parameters())]


def frozen_batchnorm_callback(modules: list[Any]) -> Any:
    """A Lightning callback keeping frozen BatchNorm layers in eval mode, so their running statistics
    stay those of the loaded weights (as Keras does for non-trainable layers)."""
    import lightning.pytorch as pl

    class FrozenBatchNorm(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            for m in modules:
                m.eval()

    return FrozenBatchNorm()


def _best_epoch(path: Path, monitor: str | None, mode: str) -> int | None:
    """Epoch (0-based) of the best monitored value in ``metrics.csv``; the last epoch without a monitor."""
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if monitor is not None:
        rows = [r for r in rows if r.get(monitor) not in (None, "")]
    if not rows:
        return None
    if monitor is None:
        return int(rows[-1]["epoch"])
    pick = min if mode == "min" else max
    return int(pick(rows, key=lambda r: float(r[monitor]))["epoch"])


def _best_from_table(path: Path, column: str) -> float | None:
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        values = [float(r[column]) for r in csv.DictReader(fh) if r.get(column) not in (None, "")]
    return max(values) if values else None


def fit_from_file(config_path: str | Path | None, overrides: list[str], **kwargs: Any) -> Path:
    return fit(load_config(config_path, overrides), **kwargs)


__all__ = ["fit", "fit_from_file", "prepare_run_dir", "prepare_weights", "run_dataset", "RunDirError"]
