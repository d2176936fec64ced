"""Training: the run directory, resume from a checkpoint, NaN handling, DDP on two CPU processes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from kinetoscope.config import build_config
from kinetoscope.registry import MODELS, register_model
from kinetoscope.train import RunDirError, fit


def _config(root: Path, out: Path, name: str = "run", **train) -> object:
    return build_config({
        "name": name,
        "out_dir": str(out),
        "data": {"root": str(root), "batch_size": 8},
        "model": {"name": "cnn3d", "hidden": 4, "blocks": 2},
        "optim": {"name": "adam", "lr": 0.01},
        "train": {"max_epochs": 2, "progress": False, **train},
    })


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fit_writes_the_run_directory_and_learns_direction_of_motion(motion_dataset, tmp_path):
    from kinetoscope.evaluate.run import predict_run

    run = fit(_config(motion_dataset, tmp_path, max_epochs=6))
    for name in ["config.yaml", "metrics.csv", "model.safetensors", "model.json", "summary.json",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"]:
        assert (run / name).is_file(), name
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    assert all(r["val_acc"] and r["train_loss"] and r["lr"] for r in rows)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] == 822 and summary["classes"] == ["left", "right"]
    forward = predict_run(run)
    assert forward["accuracy"] >= 0.9  # only temporal order separates the classes
    assert (run / "predictions.csv").is_file() and (run / "video_predictions.csv").is_file()
    # reversing the clip turns "left" into "right": a model that uses order must flip its answers
    reversed_ = predict_run(run, reverse=True)
    assert reversed_["accuracy"] <= 0.25
    assert reversed_["rr"] == pytest.approx(reversed_["accuracy"] / summary["best_val_acc"])


def test_run_directory_is_not_overwritten_without_permission(motion_dataset, tmp_path):
    cfg = _config(motion_dataset, tmp_path, max_epochs=1)
    fit(cfg)
    with pytest.raises(RunDirError, match="--overwrite"):
        fit(cfg)
    fit(cfg, overwrite=True)


def test_resume_continues_from_the_last_checkpoint(motion_dataset, tmp_path):
    run = fit(_config(motion_dataset, tmp_path, max_epochs=2))
    first = _rows(run / "metrics.csv")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 4  # 32 clips, batch 8
    fit(_config(motion_dataset, tmp_path, max_epochs=4), resume=True)
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert rows[:2] == first  # history kept, not retrained
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4 * 4
    assert "max_epochs: 4" in (run / "config.yaml").read_text()  # the config the run finished under


def test_cosine_schedule_follows_seed_002_formula_per_step(motion_dataset, tmp_path):
    import math

    cfg = _config(motion_dataset, tmp_path, max_epochs=3, patience=3)
    cfg = build_config({**cfg.model_dump(mode="json"),
                        "optim": {"name": "sgd", "lr": 0.1, "schedule": "cosine", "warmup_steps": 6}})
    run = fit(cfg)
    lrs = [float(r["lr"]) for r in _rows(run / "metrics.csv")]
    steps_per_epoch, total = 4, 12  # 32 clips, batch 8, 3 epochs
    # the lr after epoch e's last step n = 4 (e + 1): lr0 * ramp * 1/2 (1 + cos(pi n / n_max)), where the
    # linear warm-up ramp min(1, (n + 1) / 6) is still 5/6 after the first epoch
    ramp = [5 / 6, 1.0, 1.0]
    expected = [0.1 * ramp[e] * 0.5 * (1 + math.cos(math.pi * steps_per_epoch * (e + 1) / total)) for e in range(3)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)


class _Diverging(nn.Module):
    """Returns NaN logits from its 4th training forward pass on."""

    streams = ("rgb",)
    explain_layer = "linear"

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, num_classes)
        self.calls = 0

    def forward(self, x):
        logits = self.linear(x.mean(dim=(2, 3, 4)))
        if self.training:
            self.calls += 1
            if self.calls > 3:
                return logits * float("nan")
        return logits


def test_nan_loss_stops_training_and_keeps_the_last_good_weights(motion_dataset, tmp_path):
    if "test_diverging" not in MODELS:
        register_model("test_diverging")(lambda num_classes, in_channels=1: _Diverging(num_classes, in_channels))
    cfg = _config(motion_dataset, tmp_path, max_epochs=5)
    cfg = build_config({**cfg.model_dump(mode="json"), "model": {"name": "test_diverging"}})
    run = fit(cfg)
    summary = json.loads((run / "summary.json").read_text())
    assert "non-finite loss at step 3" in summary["stopped_by"]
    assert summary["epochs_trained"] <= 1
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def test_ddp_on_two_cpu_processes(motion_dataset, tmp_path):
    cfg = tmp_path / "ddp.yaml"
    cfg.write_text(_config(motion_dataset, tmp_path, name="ddp").to_yaml())
    env = {**os.environ, "KINETOSCOPE_PLAIN": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "kinetoscope", "train", "--config", str(cfg), "--devices", "2", "--strategy", "ddp"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    # each of the 2 processes sees half of the 32 training clips: 2 batches of 8 per epoch
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 2
    assert summary["evaluations"]["val"]["n"] == 16


_DDP_NAN_SCRIPT = """
import sys, torch
from torch import nn
from kinetoscope.config import load_config
from kinetoscope.registry import register_model
from kinetoscope.train import fit

class RankOneDiverges(nn.Module):
    # NaN logits on rank 1 only, from its 2nd training forward pass on; rank 0 stays finite.
    streams = ("rgb",)
    explain_layer = "linear"

    def __init__(self, num_classes, in_channels=1):
        super().__init__()
        self.linear = nn.Linear(in_channels, num_classes)
        self.calls = 0

    def forward(self, x):
        logits = self.linear(x.mean(dim=(2, 3, 4)))
        if self.training and torch.distributed.is_initialized() and torch.distributed.get_rank() == 1:
            self.calls += 1
            if self.calls > 1:
                return logits * float("nan")
        return logits

register_model("rank_one_diverges")(RankOneDiverges)
if __name__ == "__main__":
    fit(load_config(sys.argv[1]))
"""


def test_nan_loss_on_one_ddp_rank_stops_every_rank_without_hanging(motion_dataset, tmp_path):
    cfg = _config(motion_dataset, tmp_path, name="ddp_nan", max_epochs=5, devices=2, strategy="ddp")
    cfg = build_config({**cfg.model_dump(mode="json"), "model": {"name": "rank_one_diverges"}})
    (tmp_path / "ddp_nan.yaml").write_text(cfg.to_yaml())
    script = tmp_path / "train_ddp_nan.py"
    script.write_text(_DDP_NAN_SCRIPT)
    env = {**os.environ, "KINETOSCOPE_PLAIN": "1"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "ddp_nan.yaml")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "ddp_nan" / "summary.json").read_text())
    assert "non-finite loss at step 1" in summary["stopped_by"]
    state = torch.load(tmp_path / "ddp_nan" / "checkpoints" / "last.ckpt", weights_only=True)
    # one good update on both ranks, then step 1 ran (zero gradients) but no optimizer update, and stopped
    assert state["global_step"] == 2
    adam_steps = {float(v["step"]) for v in state["optimizer_states"][0]["state"].values()}
    assert adam_steps == {1.0}
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_two_stream_towers_each_get_their_own_loss(motion_dataset):
    from kinetoscope.config import OptimConfig
    from kinetoscope.train.module import VideoClassifier

    class Towers(nn.Module):
        streams = ("rgb", "flow")

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(1, 2)
            self.b = nn.Linear(1, 2)

        def forward_towers(self, rgb, flow):
            return {"fusion": self.a(rgb.mean(dim=(1, 2, 3, 4))[:, None]),
                    "motion": self.b(flow.mean(dim=(1, 2, 3, 4))[:, None])}

        def forward(self, rgb, flow):
            return torch.stack(list(self.forward_towers(rgb, flow).values())).mean(0)

    module = VideoClassifier(Towers(), 2, OptimConfig())
    batch = {"video": torch.rand(4, 1, 2, 4, 4), "flow": torch.rand(4, 2, 2, 4, 4), "label": torch.tensor([0, 1, 0, 1])}
    module.log = lambda *a, **k: None  # outside a Trainer
    loss = module.training_step(batch, 0)
    towers = module.model.forward_towers(batch["video"], batch["flow"])
    expected = sum(torch.nn.functional.cross_entropy(t, batch["label"]) for t in towers.values())
    assert torch.allclose(loss, expected)


def test_ddp_optimizer_step_hands_the_loss_to_the_precision_plugin():
    """Under DDP the step closure must return the loss: AMP's GradScaler skips the update (and the
    unscaling before gradient clipping) when the closure returns None, as for a skipped backward."""
    from types import SimpleNamespace

    from kinetoscope.config import OptimConfig
    from kinetoscope.train.module import VideoClassifier

    class RecordingOptimizer:
        def __init__(self):
            self.closure_results = []

        def step(self, closure=None):
            self.closure_results.append(None if closure is None else closure())

    module = VideoClassifier(nn.Linear(2, 2), 2, OptimConfig())
    module._trainer = SimpleNamespace(world_size=2)
    loss = torch.tensor(0.7)
    optimizer = RecordingOptimizer()
    module.optimizer_step(0, 0, optimizer, lambda: loss)
    assert optimizer.closure_results == [loss]
    module.nonfinite_step = 3  # a non-finite loss on some rank: the backward ran, no update anywhere
    module.optimizer_step(0, 1, optimizer, lambda: loss)
    assert optimizer.closure_results == [loss]
