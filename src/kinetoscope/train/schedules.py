"""Training schedules of Stergiou 2021 §4.4.1 / §5.4.1 / §6.4: step learning rate and multigrid.

* :func:`step_lr_factor` — ``lr0 · gamma^k`` after the ``k``-th milestone epoch (SRTG on HACS: lr0 0.1,
  ×0.1 at epochs 40, 70, 120 of 150, §4.4.1; transfer: ×0.1 at 40 and 60 of 80) or every ``every`` epochs
  (Class Regularisation: ×0.1 every 50 of 120; fine-tuning every 70, §6.4). Config
  ``optim.schedule: step`` with ``optim.milestones`` or ``optim.step_every`` and ``optim.gamma``.
* :class:`MultigridCallback` — the multigrid schedule of :mod:`kinetoscope.data.multigrid` during
  training: reshapes each batch to its iteration's ``(t, h, w)`` and multiplies the learning rate by the
  long-cycle batch factor for that step (the linear scaling rule, §4.4.1). Config ``train.multigrid``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl

from kinetoscope.data.multigrid import MultigridStep, multigrid_resize


def step_lr_factor(
    epoch: int, milestones: Sequence[int] = (), every: int | None = None, gamma: float = 0.1
) -> float:
    """Learning-rate factor at ``epoch`` (0-based): ``gamma ** k``, ``k`` = milestones reached (an epoch
    equal to a milestone already has the reduced rate) or ``epoch // every``."""
    if every is not None:
        if every < 1:
            raise ValueError(f"optim.step_every={every} must be >= 1")
        return gamma ** (epoch // every)
    if not milestones:
        raise ValueError("optim.schedule=step needs optim.milestones (epochs) or optim.step_every")
    return gamma ** bisect.bisect_right(sorted(milestones), epoch)


class MultigridCallback(pl.Callback):
    """Applies a multigrid plan (one :class:`MultigridStep` per batch index) during training.

    ``on_train_batch_start`` resizes ``batch["video"]`` (and ``batch["flow"]``) in place to the step's
    frames and size, and scales every parameter group's learning rate by the step's ``lr_scale``; the
    unscaled rate is recovered at the next batch, so any scheduler that sets the rate (cosine, step) keeps
    working underneath. ``scale_flow``: flow holds pixel displacements, rescaled with the frame (not when
    it was normalised to image values, ``data.flow_normalize: minmax``).
    """

    def __init__(self, plan: list[MultigridStep], scale_flow: bool = True) -> None:
        super().__init__()
        self.plan = plan
        self.scale_flow = scale_flow
        self._applied: list[tuple[float, float]] = []  # per group: (lr we set, scale we applied)
        self.steps_seen: list[MultigridStep] = []

    def _rescale_lr(self, optimizer: Any, scale: float) -> None:
        groups = optimizer.param_groups
        if len(self._applied) != len(groups):
            self._applied = [(g["lr"], 1.0) for g in groups]
        for i, group in enumerate(groups):
            set_lr, applied = self._applied[i]
            base = set_lr / applied if group["lr"] == set_lr else group["lr"]  # a scheduler may have reset it
            group["lr"] = base * scale
            self._applied[i] = (group["lr"], scale)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        step = self.plan[batch_idx % len(self.plan)]
        batch["video"] = multigrid_resize(batch["video"], step.frames, step.size)
        if "flow" in batch:
            batch["flow"] = multigrid_resize(batch["flow"], step.frames, step.size, flow=self.scale_flow)
        for optimizer in trainer.optimizers:
            self._rescale_lr(optimizer, step.lr_scale)
        self.steps_seen.append(step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        for optimizer in trainer.optimizers:  # leave the unscaled rate for validation logs and checkpoints
            self._rescale_lr(optimizer, 1.0)
