"""Domain transfer (Broomé 2022 §3.3).

(a) **Train on the source without validation**: every source video trains, for a fixed number of
    epochs = ``int(1.5 x mean best epoch)`` of an intra-domain cross-validation of the same setup
    (ConvLSTM-2 77 -> 115, I3D 42 -> 63 in Broomé 2022); the mean best epoch is read from that cv run's
    per-fold results (``summary.json`` ``mean_best_epoch``, 1-based). The last epoch's weights are
    tested on every video of the target dataset.
(b) **Head-only fine-tuning**: the source model is fine-tuned on the target's leave-one-subject-out
    folds with every parameter frozen except the head (``train.trainable = ["head"]``; frozen
    BatchNorm layers keep their source statistics), through :func:`kinetoscope.suites.cv.run_cv`.

Layout of ``out_dir``: ``source/`` (the source run), ``target_test.json`` and the target predictions
inside ``source/``, ``finetune/`` (a cv directory), ``transfer.json`` (all headline numbers).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kinetoscope.config import RunConfig
from kinetoscope.utils import atomic_write_json

HEAD_PREFIXES = ("head",)


def mean_best_epoch(cv_dir: str | Path) -> float:
    """Mean (1-based) best-validation epoch over the folds of a cv run (its ``folds/*/fold.json``)."""
    cv_dir = Path(cv_dir)
    folds = sorted((cv_dir / "folds").glob("*/fold.json"))
    epochs = [json.loads(p.read_text()).get("best_epoch") for p in folds]
    epochs = [e for e in epochs if e is not None]
    if not epochs:
        raise FileNotFoundError(
            f"{cv_dir}: no finished folds with a best epoch (folds/*/fold.json); run cv first"
        )
    return sum(e + 1 for e in epochs) / len(epochs)


def transfer_epochs(cv_dir: str | Path, factor: float = 1.5) -> int:
    """``int(factor x mean best epoch)`` (Broomé 2022 §3.3: 77 -> 115), at least 1."""
    return max(1, int(math.floor(factor * mean_best_epoch(cv_dir))))


def source_config(config: RunConfig, epochs: int, out_dir: Path) -> RunConfig:
    """``config`` changed to train on every source video, without validation, for ``epochs`` epochs."""
    from kinetoscope.data.cache import DatasetStore

    subjects = sorted({r.subject for r in DatasetStore(config.data.root).records()})
    if not all(subjects):
        raise ValueError(
            f"{config.data.root}: transfer trains on all source videos, which needs a subject per video"
        )
    data = config.data.model_copy(
        update={
            "train_subjects": subjects,
            "val_split": None,
            "val_subjects": None,
            "test_subjects": None,
            "test_split": None,
        }
    )
    train = config.train.model_copy(update={"max_epochs": epochs, "progress": False})
    return config.model_copy(update={"name": "source", "out_dir": out_dir, "data": data, "train": train})


def run_transfer(
    config: RunConfig,
    target: str | Path,
    source_cv: str | Path | None = None,
    epochs: int | None = None,
    out_dir: str | Path | None = None,
    finetune: bool = True,
    finetune_repeats: int = 1,
    val_subject: str | Sequence[str] | None = None,
    workers: int = 1,
    frame_aggregation: str = "vote",
    top_fraction: float = 0.05,
    threads: int | None = None,
) -> dict[str, Any]:
    """Source -> target transfer of ``config`` (its ``data.root`` is the source). ``epochs`` or
    ``source_cv`` (a cv directory of the same setup on the source) fixes the training length.
    Returns (and writes to ``transfer.json``) the target metrics and, with ``finetune``, the
    head-only fine-tuning cv summary."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.suites.cv import evaluate_test_part, run_cv
    from kinetoscope.train.fit import fit

    if epochs is None:
        if source_cv is None:
            raise ValueError("transfer needs epochs or source_cv (a cv run of this setup on the source data)")
        epochs = transfer_epochs(source_cv)
    out_dir = Path(out_dir) if out_dir is not None else config.out_dir / f"{config.name}-transfer"
    target = Path(target)
    source_classes, target_classes = DatasetStore(config.data.root).classes, DatasetStore(target).classes
    if source_classes != target_classes:
        raise ValueError(
            f"source {config.data.root} has classes {source_classes}, target {target} has {target_classes}; "
            "transfer needs the same classes in the same order"
        )

    src = source_config(config, epochs, out_dir)
    if not (src.run_dir / "model.safetensors").is_file():
        import torch

        resume = (src.run_dir / "checkpoints" / "last.ckpt").is_file()
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        try:
            fit(src, overwrite=not resume, resume=resume)
        finally:
            torch.set_num_threads(before)
    target_data = src.data.model_copy(
        update={"root": target, "test_subjects": None, "test_split": None, "train_subjects": None}
    )
    target_cfg = src.model_copy(update={"data": target_data})
    result: dict[str, Any] = {
        "source": str(config.data.root),
        "target": str(target),
        "epochs": epochs,
        "source_cv": str(source_cv) if source_cv else None,
    }
    result["target_test"] = evaluate_test_part(
        src.run_dir, target_cfg, frame_aggregation, top_fraction, prefix="target"
    )
    atomic_write_json(out_dir / "target_test.json", result["target_test"])

    if finetune:
        tune = config.model_copy(
            update={
                "name": "finetune",
                "out_dir": out_dir,
                "data": config.data.model_copy(update={"root": target}),
                "train": config.train.model_copy(
                    update={"init_from": str(src.run_dir), "trainable": list(HEAD_PREFIXES)}
                ),
            }
        )
        cv_dir = run_cv(
            tune,
            protocol="loso",
            repeats=finetune_repeats,
            val_subject=val_subject,
            out_dir=out_dir / "finetune",
            workers=workers,
            frame_aggregation=frame_aggregation,
            top_fraction=top_fraction,
            threads=threads,
        )
        result["finetune"] = json.loads((cv_dir / "summary.json").read_text())
    atomic_write_json(out_dir / "transfer.json", result)
    return result


__all__ = ["run_transfer", "mean_best_epoch", "transfer_epochs", "source_config"]
