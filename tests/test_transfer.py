"""Domain transfer (Broomé 2022 §3.3): 1.5 x the mean best epoch of a cv run, training without
validation, and head-only fine-tuning that leaves every trunk weight and BatchNorm statistic alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kinetoscope.config import build_config
from kinetoscope.data.index import VideoRecord


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine: more threads only add contention
    yield
    torch.set_num_threads(before)


def _fake_cv(folder: Path, best_epochs: list[int]) -> Path:
    for i, e in enumerate(best_epochs):
        path = folder / "folds" / f"r0-test={i}" / "fold.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"best_epoch": e}))
    return folder


def test_transfer_trains_one_and_a_half_times_the_mean_best_epoch(tmp_path: Path) -> None:
    from kinetoscope.suites.transfer import mean_best_epoch, transfer_epochs

    cv = _fake_cv(tmp_path / "cv", [75, 76, 77])  # 0-based epoch indices -> epochs 76, 77, 78
    assert mean_best_epoch(cv) == 77
    assert transfer_epochs(cv) == 115  # Broomé 2022 §3.3: ConvLSTM-2 77 -> 115
    with pytest.raises(FileNotFoundError, match="run cv first"):
        mean_best_epoch(tmp_path / "empty")


def _store(root: Path, seed: int) -> Path:
    from conftest import write_motion_dataset
    from kinetoscope.data.cache import DatasetStore

    write_motion_dataset(root, per_class=6, frames=8, size=16, seed=seed)
    store = DatasetStore(root)
    records = sorted(store.records(), key=lambda r: r.video_id)
    store.write_records(
        [VideoRecord(**{**r.__dict__, "subject": str(1 + i % 3)}) for i, r in enumerate(records)]
    )
    return root


def test_source_training_uses_every_video_without_validation_then_head_only_finetuning(
    tmp_path: Path,
) -> None:
    from kinetoscope.models import create_model
    from kinetoscope.models.weights import load_safetensors
    from kinetoscope.suites.transfer import run_transfer

    source, target = _store(tmp_path / "source", 0), _store(tmp_path / "target", 1)
    config = build_config(
        {
            "name": "tr",
            "out_dir": str(tmp_path / "runs"),
            "data": {"root": str(source), "frames": 4, "sampling": "dense", "stride": 4, "batch_size": 8},
            "model": {"name": "convlstm1", "hidden": 2, "blocks": 1, "kernel_size": 3},
            "optim": {"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
            "train": {"max_epochs": 50, "patience": 1, "progress": False},
        }
    )
    result = run_transfer(config, target, epochs=2, out_dir=tmp_path / "transfer")
    src = json.loads((tmp_path / "transfer" / "source" / "summary.json").read_text())
    assert src["epochs_trained"] == 2 and src["stopped_by"] == "max_epochs"  # fixed length, no early stop
    assert src["data"]["train_subjects"] == ["1", "2", "3"] and src["data"]["val_subjects"] == []
    assert src["data"]["train_videos"] > 0 and src["best_epoch"] == 1  # the last epoch is kept
    assert result["target_test"]["clip"]["n"] == 12 * 2  # every target video (12), 2 clips each
    assert result["finetune"]["folds"] == 3

    options = {"hidden": 2, "blocks": 1, "kernel_size": 3, "input_size": 16, "frames": 4}
    before = create_model("convlstm1", 2, 1, **options)
    load_safetensors(before, tmp_path / "transfer" / "source" / "model.safetensors")
    for fold in sorted((tmp_path / "transfer" / "finetune" / "folds").iterdir()):
        after = create_model("convlstm1", 2, 1, **options)
        load_safetensors(after, fold / "model.safetensors")
        a, b = before.state_dict(), after.state_dict()
        changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
        assert changed == ["head.classifier.bias", "head.classifier.weight"], fold.name
