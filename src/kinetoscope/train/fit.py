"""``kinetoscope train``: build data, model and a Lightning Trainer from a RunConfig; write the run dir.

Run directory (docs/architecture.md): config.yaml, metrics.csv (one row per epoch), checkpoints/{best,last}.ckpt,
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

from kinetoscope.config import RunConfig
from kinetoscope.utils import atomic_write_json, atomic_write_text


class RunDirError(FileExistsError):
    """The run directory holds an earlier run and neither ``--overwrite`` nor ``--resume`` was given."""


def is_child_process() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they re-run the command)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def prepare_run_dir(config: RunConfig, overwrite: bool = False, resume: bool = False) -> Path:
    """Create (or, with ``resume``, reuse) the run directory and write ``config.yaml``.

    A directory holding only the ``config.yaml`` of a run that failed before it trained is reused;
    anything more needs ``overwrite`` (start over) or ``resume`` (continue)."""
    run_dir = config.run_dir
    if is_child_process():
        return run_dir
    if resume:
        if not any((run_dir / "checkpoints").glob("*.ckpt")):  # which one: train.checkpoint_io.resume_checkpoint
            raise FileNotFoundError(f"cannot resume: {run_dir / 'checkpoints'} holds no checkpoint (*.ckpt)")
        # the run continues under this config (e.g. a larger max_epochs): config.yaml must say so
        atomic_write_text(run_dir / "config.yaml", config.to_yaml())
        return run_dir
    leftovers = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if leftovers - {"config.yaml"}:
        if not overwrite:
            raise RunDirError(
                f"run directory {run_dir} is not empty; pass --overwrite to replace it or --resume to continue"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    return run_dir


def resolve_config(config: RunConfig) -> RunConfig:
    """The config a run records: ``data.normalize: auto`` replaced by the statistics of the
    ``init_from`` weights (``none`` when there are none or they are unknown), ``dataset`` by the
    training part's own."""
    from kinetoscope.data.datamodule import dataset_statistics
    from kinetoscope.train.finetune import weights_normalization

    if config.data.normalize == "dataset":
        stats = dataset_statistics(config)
    elif config.data.normalize == "auto":
        stats = weights_normalization(config.train.init_from)
    else:
        return config
    normalize = "none" if stats is None else (list(stats[0]), list(stats[1]))
    return config.model_copy(update={"data": config.data.model_copy(update={"normalize": normalize})})


def model_spec(config: RunConfig, dataset_meta: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """Model name, sizes and options, filling ``frames``/``input_size`` from the data when the model
    takes them and the config leaves them out."""
    from kinetoscope.models import model_options

    options = dict(config.model.options)
    accepted = model_options(config.model.name)
    size = config.data.size or dataset_meta.get("size")  # the crop the model sees, else the cached frames
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
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar

    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.datamodule import VideoDataModule, has_part
    from kinetoscope.device import lightning_accelerator
    from kinetoscope.models import create_model
    from kinetoscope.models.checkpoint import save_run_model, weights_record
    from kinetoscope.models.weights import load_torch_file
    from kinetoscope.train.callbacks import EpochTable, RngState
    from kinetoscope.train.checkpoint_io import AtomicCheckpointIO, resume_checkpoint
    from kinetoscope.train.finetune import (
        freeze,
        frozen_batchnorm_callback,
        load_init_weights,
        resolve_init_from,
    )
    from kinetoscope.train.module import VideoClassifier
    from kinetoscope.utils import is_interactive, log, quiet_libraries

    accelerator = lightning_accelerator(config.train.accelerator)  # before anything is written
    config = resolve_config(config)
    run_dir = prepare_run_dir(config, overwrite=overwrite, resume=resume)
    quiet_libraries()
    pl.seed_everything(config.train.seed, workers=True, verbose=False)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)

    data = config.data
    store = DatasetStore(data.root)
    spec = model_spec(config, store.meta(), store.classes)
    model = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"])
    notes = []
    if config.train.init_from is not None and not resume:
        path, note = resolve_init_from(config.train.init_from)
        notes += [note, *load_init_weights(model, path)]
        spec["init_from"] = weights_record(path)  # model.json names the weights started from, with their sha256
    frozen = freeze(model, config.train.freeze, config.train.trainable)
    flow = data.flow or "flow" in getattr(model, "streams", ("rgb",))
    datamodule = VideoDataModule(config, flow=flow, classes=store.classes)
    train_set = datamodule.dataset("train")
    validate = has_part(data, "val")
    val_set = datamodule.dataset("val") if validate else None
    module = VideoClassifier(model, spec["num_classes"], config.optim, loss=config.train.loss)
    for note in notes:
        log(note)

    mode = "min" if config.train.monitor == "val_loss" else "max"
    monitor = config.train.monitor if validate else None  # no validation: keep the last epoch
    # last.ckpt after every epoch, improved or not (Lightning 2.6's save_last only follows top-k saves);
    # best.ckpt when the monitored value improves; without validation the last epoch is the best
    last_ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                                enable_version_counter=False)
    best_ckpt = last_ckpt if monitor is None else ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=monitor, mode=mode, save_top_k=1,
        enable_version_counter=False)
    show_bar = config.train.progress and is_interactive()
    table = EpochTable(run_dir / "metrics.csv", echo=config.train.progress and not show_bar,
                       max_epochs=config.train.max_epochs)
    callbacks = [*{id(c): c for c in (best_ckpt, last_ckpt)}.values(), table, RngState()]
    if validate:
        patience = config.train.patience
        callbacks.append(EarlyStopping(monitor=config.train.monitor, mode=mode, patience=patience))
    if frozen:
        callbacks.append(frozen_batchnorm_callback(frozen))
    if config.train.multigrid != "none":  # Stergiou 2021 §4.4.1: batches of varying shape, b·t·h·w fixed
        callbacks.append(multigrid_callback(datamodule, config))
    if show_bar:
        callbacks.append(RichProgressBar())
    trainer = pl.Trainer(
        default_root_dir=run_dir,
        max_epochs=config.train.max_epochs,
        accelerator=accelerator,
        devices=config.train.devices,
        num_nodes=config.train.num_nodes,
        strategy=config.train.strategy,
        precision=config.train.precision,
        gradient_clip_val=config.train.gradient_clip,
        limit_train_batches=config.train.limit_train_batches,
        callbacks=callbacks,
        logger=make_loggers(config, run_dir),
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic="warn",
        plugins=[AtomicCheckpointIO()],
    )
    started = time.perf_counter()
    ckpt_path = resume_checkpoint(run_dir, quiet=is_child_process()) if resume else None
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    seconds = time.perf_counter() - started
    if trainer.global_rank != 0:
        return run_dir

    best_path = best_ckpt.best_model_path or str(run_dir / "checkpoints" / "last.ckpt")
    state = load_torch_file(best_path)["state_dict"]
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
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "monitor": config.train.monitor,
        "best_val": float(best_score) if best_score is not None else None,
        "best_val_acc": _best_from_table(run_dir / "metrics.csv", "val_acc"),
        "best_checkpoint": Path(best_path).name,
        "best_epoch": _best_epoch(run_dir / "metrics.csv", monitor, mode),
        "epochs_trained": trainer.current_epoch,
        "stopped_by": stop,
        "train_seconds": round(seconds + summary.get("train_seconds", 0.0) if resume else seconds, 2),
        "data": {"root": str(data.root), "train_videos": len(train_set.records),
                 "val_videos": len(val_set.records) if val_set is not None else 0,
                 "train_subjects": sorted({r.subject for r in train_set.records}),
                 "val_subjects": sorted({r.subject for r in val_set.records}) if val_set is not None else []},
        "accelerator": accelerator,
        "init_from": config.train.init_from,
        "init_notes": notes or summary.get("init_notes", []),
        "freeze": config.train.freeze,
        "trainable": config.train.trainable,
        "commit": _git_commit(),
        "torch": torch.__version__,
    })
    atomic_write_json(summary_path, summary)
    if module.nonfinite_step is not None:
        print(f"warning: training stopped: {stop} ({run_dir / 'checkpoints'})")
    return run_dir


def multigrid_callback(datamodule: Any, config: RunConfig) -> Any:
    """The callback applying ``train.multigrid``'s shapes and learning-rate factors (one device only)."""
    from kinetoscope.train.schedules import MultigridCallback

    if config.train.devices * config.train.num_nodes > 1:
        raise ValueError(f"train.multigrid={config.train.multigrid!r} runs on one device (its batch sampler is "
                         f"not sharded); got train.devices={config.train.devices}")
    return MultigridCallback(datamodule.multigrid_plan(), scale_flow=config.data.flow_normalize == "none")


def make_loggers(config: RunConfig, run_dir: Path) -> list[Any] | bool:
    """Lightning loggers of ``train.logger`` (``metrics.csv`` is written regardless), writing under the
    run directory; ``False`` when none is asked for."""
    loggers: list[Any] = []
    for kind in config.train.logger:
        if kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            loggers.append(CSVLogger(run_dir, name="logs", version=""))
        elif kind == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            try:
                loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False))
            except ModuleNotFoundError:
                raise ValueError("train.logger tensorboard needs TensorBoard: pip install 'kinetoscope[tensorboard]'"
                                 ) from None
        elif kind == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            try:
                loggers.append(WandbLogger(project="kinetoscope", name=config.name, save_dir=str(run_dir)))
            except ModuleNotFoundError:
                raise ValueError("train.logger wandb needs wandb: pip install wandb") from None
        elif kind == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            try:
                loggers.append(MLFlowLogger(experiment_name=config.name,
                                            tracking_uri=(run_dir / "mlruns").resolve().as_uri()))
            except ModuleNotFoundError:
                raise ValueError("train.logger mlflow needs mlflow: pip install mlflow") from None
    return loggers or False


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


__all__ = ["fit", "make_loggers", "prepare_run_dir", "resolve_config", "RunDirError"]
