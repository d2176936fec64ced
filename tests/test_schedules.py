"""Training protocols of Stergiou 2021 §4.4.1 / §5.4.1 / §6.4: step learning rate, multigrid batch schedule,
Gaussian clip starts — each tested by the schedule it produces."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from kinetoscope.config import ConfigError, OptimConfig, build_config
from kinetoscope.data.multigrid import (
    LONG_CYCLE,
    SHORT_CYCLE,
    MultigridBatchSampler,
    multigrid_plan,
    multigrid_resize,
)
from kinetoscope.data.sampling import gaussian_clip_start, gaussian_start_indices
from kinetoscope.registry import MODELS, register_model
from kinetoscope.train.module import VideoClassifier
from kinetoscope.train.schedules import MultigridCallback, step_lr_factor

# ------------------------------------------------------------------------------------------ step lr


def _epoch_lrs(optim: OptimConfig, epochs: int) -> list[float]:
    module = VideoClassifier(nn.Linear(2, 2), 2, optim)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    assert configured["lr_scheduler"]["interval"] == "epoch"
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_step_schedule_of_srtg_on_hacs():
    # lr0 0.1, divided by 10 at epochs 40, 70 and 120 of 150 (Stergiou 2021 §4.4.1)
    lrs = _epoch_lrs(OptimConfig(name="sgd", lr=0.1, schedule="step", milestones=[40, 70, 120]), 150)
    expected = [0.1] * 40 + [0.01] * 30 + [0.001] * 50 + [0.0001] * 30
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_step_schedule_every_50_epochs_for_class_regularisation():
    lrs = _epoch_lrs(OptimConfig(name="sgd", lr=0.1, schedule="step", step_every=50), 120)
    assert lrs == pytest.approx([0.1] * 50 + [0.01] * 50 + [0.001] * 20, rel=1e-12)
    assert step_lr_factor(70, every=70) == pytest.approx(0.1)  # fine-tuning: every 70


def test_step_schedule_needs_its_epochs():
    with pytest.raises(ConfigError, match="optim.milestones or optim.step_every"):
        build_config({"data": {"root": "x"}, "optim": {"schedule": "step"}})


# ------------------------------------------------------------------------------------------ Gaussian start


def test_gaussian_clip_start_is_a_normal_truncated_to_the_first_half():
    length = 60_000  # long, so rounding to whole frames is negligible
    rng = np.random.default_rng(0)
    starts = np.array([gaussian_clip_start(length, rng) for _ in range(4000)])
    assert starts.min() >= 0 and starts.max() <= length / 2
    reference = stats.truncnorm(-1.5, 1.5, loc=length / 4, scale=length / 6)  # [0, L/2] = mu -+ 1.5 sigma
    assert stats.kstest(starts, reference.cdf).pvalue > 0.01
    assert starts.mean() == pytest.approx(length / 4, rel=0.02)


def test_gaussian_start_indices_follow_the_dataset_stride_or_spread_to_the_end():
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx = gaussian_start_indices(250, 16, 5, rng)  # Kinetics: ~250 frames, stride 5
        assert idx[0] <= 125 and (idx[-1] <= 249)
        if idx[0] + 75 <= 249:
            assert np.all(np.diff(idx) == 5)
        else:  # past the end: 16 indices spread over [s, L - 1]
            assert idx[-1] == 249 and np.all(np.diff(idx) >= 0)
    short = gaussian_start_indices(10, 16, 2, rng)
    assert len(short) == 16 and short[-1] == 9


def test_dataset_draws_gaussian_starts(motion_dataset):
    from kinetoscope.data.dataset import ClipDataset

    data = ClipDataset(motion_dataset, "train", frames=2, clip_start="gaussian", step=2)
    video = data.store.read_frames(data.records[0].video_id)
    torch.manual_seed(0)
    firsts = set()
    for _ in range(40):
        clip = data[0]["video"]
        matches = [t for t in range(len(video)) if np.array_equal(video[t, ..., 0] / 255.0, clip[0, 0].numpy())]
        firsts.add(matches[0])
        assert torch.equal(clip[0, 1], torch.from_numpy(video[matches[0] + 2, ..., 0] / 255.0).float())
    assert firsts <= {0, 1, 2, 3, 4} and len(firsts) > 1  # L = 8: starts in [0, 4], frames 2 apart


# ------------------------------------------------------------------------------------------ multigrid


def test_cycles_keep_the_batch_volume():
    for batch, frames, side in LONG_CYCLE + SHORT_CYCLE:
        assert batch * frames * side**2 == pytest.approx(1.0, rel=1e-12)  # b·t·h·w = B·T·H·W


def test_long_and_short_cycle_plan_of_one_epoch():
    plan = multigrid_plan(8192, 8, 16, (224, 224), "long+short")
    assert sum(s.batch for s in plan) == 8192
    # long phase k takes a quarter of the clips, in the order of §4.4.1; the short cycle shrinks space only
    for k, (lb, lt, ls) in enumerate(LONG_CYCLE):
        steps = [s for s in plan if s.long == k]
        assert sum(s.batch for s in steps) == 2048
        assert {s.lr_scale for s in steps} == {float(lb)}
        for s in steps:
            assert s.frames == round(16 * lt)
            assert s.size == (_even(224 * ls * SHORT_CYCLE[s.short][2]),) * 2
    first = plan[:3]  # the short cycle on top of (8B, T/4, H/√2): 4·8·8, 2·8·8, 8·8 clips of 4 frames
    assert [s.batch for s in first] == [256, 128, 64]
    assert [s.size for s in first] == [(80, 80), (112, 112), (160, 160)]
    assert [s.frames for s in first] == [4, 4, 4]
    assert [s.short for s in plan[:7]] == [0, 1, 2, 0, 1, 2, 0]
    for s in plan:  # the volume per iteration stays the base's within the rounding of sides to even
        if s.batch == 8 * LONG_CYCLE[s.long][0] * SHORT_CYCLE[s.short][0]:
            assert s.batch * s.frames * s.size[0] * s.size[1] == pytest.approx(8 * 16 * 224 * 224, rel=0.15)


def test_long_cycle_alone_and_no_cycle():
    plan = multigrid_plan(64, 2, 8, (16, 16), "long")
    assert [(s.batch, s.frames, s.size) for s in plan] == [(16, 2, (12, 12))] + [(8, 4, (12, 12))] * 2 + [
        (4, 4, (16, 16))] * 4 + [(2, 8, (16, 16))] * 8
    assert [(s.batch, s.size) for s in multigrid_plan(10, 4, 8, (16, 16), "none")] == [(4, (16, 16))] * 2 + [
        (2, (16, 16))]


def test_batch_sampler_visits_every_clip_once_per_epoch():
    from kinetoscope.data.datamodule import EpochSampler

    plan = multigrid_plan(50, 2, 8, (16, 16), "long+short")
    sampler = MultigridBatchSampler(EpochSampler(50, seed=0), plan)
    batches = list(sampler)
    assert [len(b) for b in batches] == [s.batch for s in plan] and len(sampler) == len(plan)
    assert sorted(i for b in batches for i, _ in b) == list(range(50))
    assert list(sampler) == batches  # the same epoch again: the same batches and clip seeds
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_resize_selects_frames_uniformly_and_rescales_flow():
    clip = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(2, 3, 8, 16, 16)
    small = multigrid_resize(clip, 4, (8, 8))
    assert small.shape == (2, 3, 4, 8, 8)
    assert small[0, 0, :, 0, 0].tolist() == [0.0, 2.0, 5.0, 7.0]  # evenly spread over the 8 frames
    flow = torch.ones(1, 2, 4, 16, 16)
    assert torch.allclose(multigrid_resize(flow, 4, (8, 8), flow=True), torch.full((1, 2, 4, 8, 8), 0.5))


def test_callback_scales_the_learning_rate_by_the_long_cycle_factor():
    plan = multigrid_plan(64, 2, 8, (16, 16), "long+short")
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    callback = MultigridCallback(plan)
    trainer = SimpleNamespace(optimizers=[optimizer])
    seen = []
    for i, step in enumerate(plan):
        batch = {"video": torch.zeros(step.batch, 1, 8, 16, 16), "flow": torch.zeros(step.batch, 2, 8, 16, 16)}
        callback.on_train_batch_start(trainer, None, batch, i)
        assert batch["video"].shape == (step.batch, 1, step.frames, *step.size) == batch["flow"].shape[:1] + (
            1, step.frames, *step.size)
        seen.append(optimizer.param_groups[0]["lr"])
        if i == 5:  # a scheduler resetting the rate (cosine, step) is respected
            optimizer.param_groups[0]["lr"] = 0.05
    scales = [s.lr_scale for s in plan]
    assert seen[:6] == pytest.approx([0.1 * f for f in scales[:6]])
    assert seen[6:] == pytest.approx([0.05 * f for f in scales[6:]])
    callback.on_train_epoch_end(trainer, None)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


class _ShapeRecorder(nn.Module):
    streams = ("rgb",)
    explain_layer = "linear"
    shapes: list[tuple[int, ...]] = []

    def __init__(self, num_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        if self.training:
            _ShapeRecorder.shapes.append(tuple(x.shape))
        return self.linear(x.mean(dim=(2, 3, 4)))


def test_fit_with_multigrid_and_step_schedule(motion_dataset, tmp_path):
    from kinetoscope.train import fit

    if "shape_recorder" not in MODELS:
        register_model("shape_recorder")(_ShapeRecorder)
    _ShapeRecorder.shapes = []
    cfg = build_config({
        "name": "mg", "out_dir": str(tmp_path),
        "data": {"root": str(motion_dataset), "batch_size": 2, "frames": 8},
        "model": {"name": "shape_recorder"},
        "optim": {"name": "sgd", "lr": 0.1, "schedule": "step", "milestones": [1, 2]},
        "train": {"max_epochs": 3, "patience": 5, "progress": False, "multigrid": "long"},
    })
    run = fit(cfg)
    plan = multigrid_plan(32, 2, 8, (16, 16), "long")
    assert _ShapeRecorder.shapes == [(s.batch, 1, s.frames, *s.size) for s in plan] * 3
    with open(run / "metrics.csv", newline="") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    assert lrs == pytest.approx([0.01, 0.001, 0.001], rel=1e-9)  # lr after each epoch's scheduler step


def _even(value: float) -> int:
    return 2 * math.ceil(round(value, 6) / 2)
