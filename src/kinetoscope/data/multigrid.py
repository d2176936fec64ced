"""Multigrid mini-batch schedule (Wu et al. 2020), as used by Stergiou 2021 §4.4.1 and §5.4.1.

Mini-batches change shape so that ``b·t·h·w = B·T·H·W`` (B, T, H×W: the base batch size, clip length and
frame size): smaller clips come in larger batches at about the same cost.

* **Long cycle** — four shapes per epoch, each for a quarter of the epoch's clips, in this order
  (Stergiou 2021 §4.4.1): ``(8B, T/4, H/√2)``, ``(4B, T/2, H/√2)``, ``(2B, T/2, H)``, ``(B, T, H)``.
* **Short cycle** — on top, iteration by iteration (index mod 3): ``(4b, t, h/2)``, ``(2b, t, h/√2)``,
  ``(b, t, h)`` — only space shrinks.
* Frames are reduced by uniform selection from the sampled clip, space by bilinear interpolation; sides
  are rounded up to even numbers. The learning rate follows the linear scaling rule with the *long-cycle*
  batch factor only (§4.4.1).

:func:`multigrid_plan` lists one :class:`MultigridStep` per iteration of an epoch (:func:`dataset_plan` for a
dataset); :class:`MultigridBatchSampler` draws batches of the plan's sizes (the training loader of
``VideoDataModule`` with ``train.multigrid``), :func:`multigrid_resize` shapes a loaded batch to the plan's
``(t, h, w)``; ``kinetoscope.train.schedules.MultigridCallback`` does that and applies the learning-rate
factor during training.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kinetoscope.data.sampling import uniform_indices

CYCLES = ("none", "long", "short", "long+short")
SQRT_HALF = 1 / math.sqrt(2)
# (batch factor, frames factor, side factor); each keeps batch·frames·side² = 1
LONG_CYCLE = ((8, 1 / 4, SQRT_HALF), (4, 1 / 2, SQRT_HALF), (2, 1 / 2, 1.0), (1, 1.0, 1.0))
SHORT_CYCLE = ((4, 1.0, 1 / 2), (2, 1.0, SQRT_HALF), (1, 1.0, 1.0))


@dataclass(frozen=True)
class MultigridStep:
    """One iteration: ``batch`` clips of ``frames`` frames at ``size`` (h, w); ``lr_scale`` the long-cycle
    batch factor the learning rate is multiplied by; ``long`` / ``short`` the cycle positions."""

    batch: int
    frames: int
    size: tuple[int, int]
    lr_scale: float
    long: int
    short: int


def _even_ceil(value: float) -> int:
    return max(2, 2 * math.ceil(round(value, 6) / 2))


def multigrid_plan(
    num_samples: int,
    batch_size: int,
    frames: int,
    size: tuple[int, int],
    cycle: str = "long+short",
) -> list[MultigridStep]:
    """The iterations of one epoch over ``num_samples`` clips (base ``batch_size``, ``frames``, ``size``).

    Long-cycle phase ``k`` takes the clips ``[k·N/4, (k+1)·N/4)``; its last batch holds what is left of
    the phase. ``cycle``: long | short | long+short (``none`` is the fixed base shape).
    """
    if cycle not in CYCLES:
        raise ValueError(f"train.multigrid={cycle!r}; expected one of {', '.join(CYCLES)}")
    if num_samples < 1 or batch_size < 1 or frames < 1:
        raise ValueError(f"multigrid_plan: num_samples={num_samples}, batch_size={batch_size}, frames={frames}")
    long = LONG_CYCLE if cycle in ("long", "long+short") else ((1, 1.0, 1.0),)
    short = SHORT_CYCLE if cycle in ("short", "long+short") else ((1, 1.0, 1.0),)
    bounds = [round(num_samples * k / len(long)) for k in range(len(long) + 1)]
    plan: list[MultigridStep] = []
    for k, (lb, lt, ls) in enumerate(long):
        left = bounds[k + 1] - bounds[k]
        while left > 0:
            j = len(plan) % len(short)
            sb, st, ss = short[j]
            batch = min(batch_size * lb * sb, left)
            side = (_even_ceil(size[0] * ls * ss), _even_ceil(size[1] * ls * ss))
            plan.append(MultigridStep(batch, max(1, round(frames * lt * st)), side, float(lb), k, j))
            left -= batch
    return plan


def dataset_plan(dataset, batch_size: int, cycle: str) -> list[MultigridStep]:
    """:func:`multigrid_plan` over ``dataset``; its base frames and size are those of its first clip."""
    first = dataset[0]["video"]
    return multigrid_plan(len(dataset), batch_size, int(first.shape[1]), (int(first.shape[2]), int(first.shape[3])),
                          cycle)


class MultigridBatchSampler(torch.utils.data.Sampler[list]):
    """Batches of the sizes of ``plan``, cut from the items of ``sampler`` (an epoch's order, e.g. the
    ``(index, clip_seed)`` pairs of ``kinetoscope.data.datamodule.EpochSampler``); ``set_epoch`` is
    passed on, so a resumed run sees the same batches."""

    def __init__(self, sampler: torch.utils.data.Sampler, plan: list[MultigridStep]):
        if sum(step.batch for step in plan) != len(sampler):
            raise ValueError(
                f"multigrid plan covers {sum(s.batch for s in plan)} clips, the sampler has {len(sampler)}"
            )
        self.sampler = sampler
        self.plan = plan

    def set_epoch(self, epoch: int) -> None:
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[list]:
        items = iter(self.sampler)
        for step in self.plan:
            yield [next(items) for _ in range(step.batch)]


def multigrid_resize(clip: torch.Tensor, frames: int, size: tuple[int, int], flow: bool = False) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B, C, frames, h, w]``: uniform frame selection, then bilinear resizing of every
    frame. Flow (``flow=True``, pixel displacements in the first two channels) is rescaled with the frame."""
    b, c, t, h, w = clip.shape
    if frames != t:
        index = torch.as_tensor(uniform_indices(t, frames), device=clip.device)
        clip = clip.index_select(2, index)
    if tuple(size) == (h, w):
        return clip
    out = F.interpolate(clip, size=(clip.shape[2], *size), mode="trilinear", align_corners=False)
    if flow:
        out = out.clone()
        out[:, 0] *= size[1] / w  # u (horizontal)
        out[:, 1] *= size[0] / h  # v (vertical)
    return out
