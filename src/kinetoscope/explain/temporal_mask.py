"""Temporal masks: which frames does a video model need? (Mänttäri 2020 §3.1, §4.3; Broomé 2022 §5.2).

A mask ``m = sigmoid(z) in [0, 1]^T`` perturbs the clip over time:

* **freeze** ``x'_0 = x_0``, ``x'_t = (1 - m_t) x_t + m_t x'_{t-1}`` — a masked frame repeats the
  *perturbed* previous frame, so a run of ones holds the frame before it;
* **reverse** — frames with ``m > 0.1`` form contiguous runs ``a``; inside a run the pair
  ``(a_u, a_{-u-1})`` is blended, ``x'[a_u] = (1 - m[a_u]) x[a_u] + m[a_u] x[a_{-u-1}]`` (the
  authors' code), which for a binary mask reverses each run in place.

``z`` minimises ``L = λ1 ||m||_1 + λ2 TV_β(m) + F_c(x')`` with ``F_c`` the softmax score of the target
class (the predicted class unless given), ``TV_β(m) = Σ_{u=1}^{T-2} |m_{u-1} - m_u|^β + |m_{u+1} - m_u|^β``,
β = 3, λ1 = 0.01, λ2 = 0.02, Adam lr 0.2, 300 iterations. ``z`` starts at ±5 on the
**central initialisation**: the smallest centred mask that still removes ≥ 90 % of the drop of the
full freeze (the last size meeting the criterion — the authors' code keeps the first that fails,
``legacy_off_by_one=True``). FS and RS are recomputed with the final mask; RS uses the mask learned
with freeze. ``m > 0.5`` is the binary mask and its count the mask length. Drop ratio
``(OS - FS) / (OS - RS)`` is NaN when ``OS - RS <= 0.001`` or ``OS - FS <= 0.001``; drop difference
``RS - FS`` is kept for every clip. These choices where the documents are silent or differ from the
authors' code: docs/deviations.md, "Temporal masks".

Note on Broomé 2022's freeze example: §5.2 prints the mask ``[0,0,0,1,1,1,1,1,1,0,…]`` (on at 4–9,
1-based) with the result ``[1,2,3,3,3,3,3,3,9,…]``, which freezes only frames 4–8; the recursion the
same page gives as pseudo-code produces that result for the mask on at 4–8, and
``[1,2,3,3,3,3,3,3,3,10,…]`` for the mask on at 4–9. The tests check the recursion.

**Protocols** (``protocol=``, :data:`MASK_PROTOCOLS`):

* ``"paper"`` (default) — every clip runs the same fixed number of Adam iterations (300), no early stop.
  Mänttäri 2020 §4.3 compares the two models' masks "using the same number of iterations"; mask lengths,
  drop ratios and final losses of different models are only comparable this way, so every comparison of
  masks between models in kinetoscope (the demo, ``report.html``, ``benchmarks/temporal_mask.py``) uses it.
* ``"early-stop"`` — the fast mode: a clip stops when ``|ΔL| < tolerance`` (1e-5, the stopping rule of
  the authors' code) and leaves the batch. Fewer iterations, but a model whose loss flattens sooner gets
  a less settled mask, so its lengths are not comparable with another model's.

Two implementations compute the same thing:

* :func:`temporal_mask_reference` — the published procedure: one clip at a time, 300 fixed Adam
  iterations (``torch.optim.Adam``, ``loss.backward()`` through a model whose parameters keep
  ``requires_grad``), the freeze recursion as a Python loop over frames, the central
  initialisation one forward pass per candidate.
* :func:`temporal_mask` — the batched path: many clips per forward/backward with the model in eval mode
  and its parameters frozen; freeze for all clips at once (the recurrence stepped over T, or as
  one ``[T, T]`` weight matrix per clip — the recurrence unrolled,
  ``x'_t = Σ_{s<=t} (1 - m_s) Π_{r=s+1}^{t} m_r x_s`` with ``m_0`` taken as 0 — which is exact but
  slower on CPU), reverse as one gather with a run-reversing permutation; all
  central-initialisation candidates in one batched pass; Adam written out per clip (the
  ``torch.optim.Adam`` update, elementwise) so that under ``"early-stop"`` a clip can leave the batch.
  ``benchmarks/temporal_mask.py`` measures both, under both protocols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kinetoscope.explain.base import (
    ClipInput,
    Explanation,
    StreamForward,
    as_stream_list,
    class_scores,
    frozen_eval,
    resolve_target,
    stream_index,
)
from kinetoscope.registry import EXPLAINERS

PERTURBATIONS = ("freeze", "reverse")
PAPER_ITERATIONS = 300
MASK_PROTOCOLS = {
    "paper": "the same fixed number of Adam iterations for every clip (Mänttäri 2020 §4.3: 300), no early stop",
    "early-stop": "fast mode: each clip stops when |ΔL| < tolerance (masks of different models not comparable)",
}


def protocol_label(protocol: str, iterations: int) -> str:
    """One line for reports: the protocol and iteration count a set of masks was learned with."""
    if protocol == "paper":
        changed = "" if iterations == PAPER_ITERATIONS else f" (the paper: {PAPER_ITERATIONS})"
        return f"paper protocol: {iterations} fixed Adam iterations per clip{changed}, no early stop"
    if protocol == "early-stop":
        return f"early-stop (fast) mode: at most {iterations} Adam iterations, stopped at |ΔL| < tolerance"
    return "protocol and iterations not recorded (masks made before kinetoscope recorded them)"


# --------------------------------------------------------------------------------------------------
# perturbations


def _batched_mask(clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as ``[B, T]`` (a ``[T]`` mask applies to every clip)."""
    if clips.dim() != 5:
        raise ValueError(f"clips must be [B, C, T, H, W]; got shape {tuple(clips.shape)}")
    b, _, t = clips.shape[:3]
    mask = torch.as_tensor(mask, device=clips.device)
    if mask.dim() == 1:
        mask = mask.unsqueeze(0).expand(b, -1)
    if mask.shape != (b, t):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match clips [B={b}, T={t}]; "
                         "expected [B, T] or a single mask of length T")
    return mask.to(clips.dtype)


def freeze_weights(mask: torch.Tensor) -> torch.Tensor:
    """The freeze recursion as weights ``W [B, T, T]`` with ``x' = W x`` over time.

    ``W[t, s] = (1 - m_s) Π_{r=s+1}^{t} m_r`` for ``s <= t`` (``m_0`` counts as 0: frame 0 is never
    replaced), 0 above the diagonal. ``mask [B, T]``.
    """
    b, t = mask.shape
    m = torch.cat([mask.new_zeros(b, 1), mask[:, 1:]], dim=1)
    # products[b, s, t] = Π_{r=s+1}^{t} m_r: cumulative product along t of m_r for r > s, 1 elsewhere
    later = torch.ones(t, t, dtype=torch.bool, device=mask.device).triu(diagonal=1)  # r > s
    factors = torch.where(later, m.unsqueeze(1).expand(b, t, t), torch.ones_like(m).unsqueeze(1))
    products = torch.cumprod(factors, dim=2)
    weights = products * (1 - m).unsqueeze(2)  # [b, s, t]
    lower = torch.ones(t, t, dtype=torch.bool, device=mask.device).triu()  # t >= s
    return torch.where(lower, weights, torch.zeros_like(weights)).transpose(1, 2)  # [b, t, s]


def apply_freeze(clips: torch.Tensor, mask: torch.Tensor, method: str = "recurrence") -> torch.Tensor:
    """Freeze perturbation (Mänttäri 2020 §3.1): ``x'_t = (1 - m_t) x_t + m_t x'_{t-1}``, ``x'_0 = x_0``.

    ``clips [B, C, T, H, W]``, ``mask [B, T]`` (or ``[T]``) in [0, 1] -> ``[B, C, T, H, W]``;
    differentiable in ``mask``. ``method="recurrence"`` steps the recurrence over T with all clips at
    once (T fused elementwise ops); ``"matrix"`` applies :func:`freeze_weights` as one batched matmul
    over time. Both give the documents' recursion (bit for bit on binary masks); on CPU the recurrence is
    the faster (the matrix form costs T times the arithmetic), which ``benchmarks/temporal_mask.py``
    reports.
    """
    mask = _batched_mask(clips, mask)
    if method == "matrix":
        b, c, t, h, w = clips.shape
        weights = freeze_weights(mask).unsqueeze(1)  # [B, 1, T, T]
        return torch.matmul(weights, clips.reshape(b, c, t, h * w)).view(b, c, t, h, w)
    if method != "recurrence":
        raise ValueError(f"method={method!r}; expected 'recurrence' or 'matrix'")
    m = mask.view(mask.shape[0], 1, mask.shape[1], 1, 1)
    keep = 1 - m
    frames = [clips[:, :, 0]]
    for t in range(1, clips.shape[2]):
        frames.append(keep[:, :, t] * clips[:, :, t] + m[:, :, t] * frames[-1])
    return torch.stack(frames, dim=2)


def freeze_reference(clips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The freeze recursion as Broomé 2022 §5.2's pseudo-code: a Python loop over frames, one clip at a time."""
    mask = _batched_mask(clips, mask)
    out = []
    for clip, m in zip(clips, mask, strict=True):
        frames = [clip[:, 0]]
        for t in range(1, clip.shape[1]):
            frames.append((1 - m[t]) * clip[:, t] + m[t] * frames[-1])
        out.append(torch.stack(frames, dim=1))
    return torch.stack(out)


def reverse_permutation(mask: torch.Tensor, threshold: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Source frame of every frame under run-wise reversal, and which frames are in a run.

    ``mask [B, T]`` -> ``(source [B, T] long, active [B, T] bool)``: frames with ``m > threshold``
    form contiguous runs ``[start, end]``; inside a run frame t takes frame ``start + end - t``.
    """
    b, t = mask.shape
    active = mask > threshold
    steps = torch.arange(t, device=mask.device).expand(b, t)
    previous = torch.cat([active.new_zeros(b, 1), active[:, :-1]], dim=1)
    following = torch.cat([active[:, 1:], active.new_zeros(b, 1)], dim=1)
    starts = torch.where(active & ~previous, steps, torch.full_like(steps, -1)).cummax(dim=1).values
    ends_marked = torch.where(active & ~following, steps, torch.full_like(steps, t))
    ends = ends_marked.flip(1).cummin(dim=1).values.flip(1)
    source = torch.where(active, starts + ends - steps, steps)
    return source, active


def apply_reverse(clips: torch.Tensor, mask: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Reverse perturbation (Mänttäri 2020 §3.1; the blend is the authors' code's): each contiguous run of frames with
    ``m > threshold`` is reversed in place with the soft pair blend
    ``x'[a_u] = (1 - m[a_u]) x[a_u] + m[a_u] x[a_{-u-1}]``; frames outside runs are unchanged.

    ``clips [B, C, T, H, W]``, ``mask [B, T]`` (or ``[T]``) -> ``[B, C, T, H, W]``. Vectorised.
    """
    mask = _batched_mask(clips, mask)
    source, active = reverse_permutation(mask, threshold)
    b, c, t, h, w = clips.shape
    index = source.view(b, 1, t, 1, 1).expand(b, c, t, h, w)
    swapped = torch.gather(clips, 2, index)
    m = torch.where(active, mask, torch.zeros_like(mask)).view(b, 1, t, 1, 1)
    return (1 - m) * clips + m * swapped


def reverse_reference(clips: torch.Tensor, mask: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Reverse perturbation as the paper's procedure: find the runs, loop over each run's pairs."""
    mask = _batched_mask(clips, mask)
    out = []
    for clip, m in zip(clips, mask, strict=True):
        frames = [clip[:, t] for t in range(clip.shape[1])]
        runs, current = [], []
        for t, value in enumerate(m.tolist()):
            if value > threshold:
                current.append(t)
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        for run in runs:
            for u, frame in enumerate(run):
                partner = run[-u - 1]
                frames[frame] = (1 - m[frame]) * clip[:, frame] + m[frame] * clip[:, partner]
        out.append(torch.stack(frames, dim=1))
    return torch.stack(out)


def perturb(clips: torch.Tensor, mask: torch.Tensor, perturbation: str, threshold: float = 0.1) -> torch.Tensor:
    if perturbation == "freeze":
        return apply_freeze(clips, mask)
    if perturbation == "reverse":
        return apply_reverse(clips, mask, threshold)
    raise ValueError(f"perturbation={perturbation!r}; expected one of {PERTURBATIONS}")


def _perturb_reference(clips: torch.Tensor, mask: torch.Tensor, perturbation: str,
                       threshold: float = 0.1) -> torch.Tensor:
    if perturbation == "freeze":
        return freeze_reference(clips, mask)
    if perturbation == "reverse":
        return reverse_reference(clips, mask, threshold)
    raise ValueError(f"perturbation={perturbation!r}; expected one of {PERTURBATIONS}")


# --------------------------------------------------------------------------------------------------
# objective and initialisation


def total_variation(mask: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """``TV_β(m) = Σ_{u=1}^{T-2} |m_{u-1} - m_u|^β + |m_{u+1} - m_u|^β`` per clip; ``mask [B, T]`` -> ``[B]``."""
    steps = (mask[:, 1:] - mask[:, :-1]).abs().pow(beta)  # steps[j] = |m_{j+1} - m_j|
    return steps[:, :-1].sum(dim=1) + steps[:, 1:].sum(dim=1)


def mask_loss(mask: torch.Tensor, scores: torch.Tensor, lambda1: float, lambda2: float,
              beta: float) -> torch.Tensor:
    """``λ1 ||m||_1 + λ2 TV_β(m) + F_c`` per clip ``[B]``."""
    return lambda1 * mask.abs().sum(dim=1) + lambda2 * total_variation(mask, beta) + scores


def central_masks(frames: int) -> torch.Tensor:
    """Candidate central masks ``[T // 2, T]``: row i has i frames off at each end (row 0 = all on)."""
    rows = torch.zeros(frames // 2, frames)
    for i in range(frames // 2):
        rows[i, i : frames - i] = 1
    return rows


def choose_central(ratios: list[float], legacy_off_by_one: bool = False) -> int:
    """Frames to switch off at each end, from ``ratios[i-1] = (OS - S_i) / (OS - S_full)``, i = 1…T/2-1.

    Scans i upwards and stops at the first ``r < 0.9``; keeps the last size that met the criterion
    (0, the full mask, if i = 1 fails already). ``legacy_off_by_one`` keeps the failing size instead,
    as the authors' code does (docs/deviations.md, "Temporal masks").
    """
    for i, ratio in enumerate(ratios, start=1):
        if not ratio >= 0.9:  # NaN counts as failing
            return i if legacy_off_by_one else i - 1
    return len(ratios)


def _ratios(original: float, candidate_scores: list[float], full: float) -> list[float]:
    drop = original - full
    if drop <= 0:
        return [float("nan")] * len(candidate_scores)
    return [(original - s) / drop for s in candidate_scores]


# --------------------------------------------------------------------------------------------------
# result


@dataclass
class TemporalMaskResult:
    """Temporal masks of B clips of T frames (all tensors on the CPU).

    ``mask [B, T]`` soft mask, ``binary_mask [B, T]`` (``mask > 0.5``), ``mask_length [B]``,
    ``original_score`` / ``freeze_score`` / ``reverse_score [B]`` (OS, FS, RS: softmax score of the
    target class), ``drop_ratio [B]`` (NaN where filtered), ``drop_difference [B]`` (RS - FS),
    ``target [B]``, ``iterations [B]`` (Adam steps taken), ``init_off [B]`` (frames switched off at
    each end by the central initialisation), ``loss [B]`` (final objective), ``protocol`` (the key of
    :data:`MASK_PROTOCOLS` it was learned under).
    """

    mask: torch.Tensor
    binary_mask: torch.Tensor
    mask_length: torch.Tensor
    original_score: torch.Tensor
    freeze_score: torch.Tensor
    reverse_score: torch.Tensor
    drop_ratio: torch.Tensor
    drop_difference: torch.Tensor
    target: torch.Tensor
    iterations: torch.Tensor
    init_off: torch.Tensor
    loss: torch.Tensor
    perturbation: str = "freeze"
    protocol: str = "paper"

    def rows(self) -> list[dict[str, Any]]:
        """One dict of numbers per clip."""
        out = []
        for b in range(self.mask.shape[0]):
            out.append({
                "target": int(self.target[b]),
                "original_score": float(self.original_score[b]),
                "freeze_score": float(self.freeze_score[b]),
                "reverse_score": float(self.reverse_score[b]),
                "mask_length": int(self.mask_length[b]),
                "drop_ratio": float(self.drop_ratio[b]),
                "drop_difference": float(self.drop_difference[b]),
                "iterations": int(self.iterations[b]),
                "protocol": self.protocol,
                "mask": " ".join(f"{v:.3f}" for v in self.mask[b].tolist()),
            })
        return out


def drop_statistics(original: torch.Tensor, freeze: torch.Tensor, reverse: torch.Tensor,
                    min_drop: float = 0.001) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop ratio ``(OS - FS) / (OS - RS)`` (NaN where ``OS - RS <= min_drop`` or ``OS - FS <= min_drop``)
    and drop difference ``RS - FS`` (Mänttäri 2020 §4.3; docs/deviations.md, "Temporal masks")."""
    freeze_drop, reverse_drop = original - freeze, original - reverse
    keep = (reverse_drop > min_drop) & (freeze_drop > min_drop)
    ratio = torch.where(keep, freeze_drop / reverse_drop.where(keep, torch.ones_like(reverse_drop)),
                        torch.full_like(original, float("nan")))
    return ratio, reverse - freeze


def _finish(mask, original, freeze, reverse, target, iterations, init_off, loss, perturbation,
            mask_threshold, min_drop, protocol="paper") -> TemporalMaskResult:
    ratio, difference = drop_statistics(original, freeze, reverse, min_drop)
    binary = mask > mask_threshold
    return TemporalMaskResult(
        mask=mask, binary_mask=binary, mask_length=binary.sum(dim=1), original_score=original,
        freeze_score=freeze, reverse_score=reverse, drop_ratio=ratio, drop_difference=difference,
        target=target, iterations=iterations, init_off=init_off, loss=loss, perturbation=perturbation,
        protocol=protocol,
    )


def _check(perturbation: str, clips: torch.Tensor) -> None:
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation={perturbation!r}; expected one of {PERTURBATIONS}")
    if clips.dim() != 5 or clips.shape[2] < 3:
        raise ValueError(f"clips must be [B, C, T, H, W] with T >= 3; got {tuple(clips.shape)}")


# --------------------------------------------------------------------------------------------------
# the fast path


@torch.no_grad()
def _scores_in_chunks(forward: StreamForward, clips: torch.Tensor, rows: torch.Tensor, target: torch.Tensor,
                      batch_size: int, kind: str) -> torch.Tensor:
    out = []
    for start in range(0, clips.shape[0], batch_size):
        part = slice(start, start + batch_size)
        out.append(class_scores(forward(clips[part], rows[part]), target[part], kind))
    return torch.cat(out)


def temporal_mask(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    perturbation: str = "freeze",
    *,
    stream: str | None = None,
    protocol: str = "paper",
    lambda1: float = 0.01,
    lambda2: float = 0.02,
    beta: float = 3.0,
    lr: float = 0.2,
    iterations: int = PAPER_ITERATIONS,
    tolerance: float = 1e-5,
    init: str = "central",
    init_logit: float = 5.0,
    legacy_off_by_one: bool = False,
    reverse_threshold: float = 0.1,
    mask_threshold: float = 0.5,
    min_drop: float = 0.001,
    score: str = "softmax",
    batch_size: int = 32,
) -> TemporalMaskResult:
    """Learn a temporal mask per clip, batched (module docstring; Mänttäri 2020 §3.1).

    ``clips [B, C, T, H, W]`` (two-stream models: a list in ``model.streams`` order or a dict, and
    ``stream`` names the perturbed one). ``target``: None (predicted class), an int or one class per
    clip. ``perturbation`` is the one the mask is learned with; FS and RS are both reported.
    ``protocol="paper"`` runs all ``iterations`` (300) for every clip; ``"early-stop"`` stops a clip at
    ``|ΔL| < tolerance``. ``init="central"`` or ``"full"`` (all frames on). Clips are processed
    ``batch_size`` at a time. Returns a :class:`TemporalMaskResult`.
    """
    if protocol not in MASK_PROTOCOLS:
        raise ValueError(f"temporal mask protocol={protocol!r}; expected one of {', '.join(MASK_PROTOCOLS)}")
    if iterations < 1:
        raise ValueError(f"temporal mask: iterations={iterations} must be >= 1")
    stop_at = tolerance if protocol == "early-stop" else None
    inputs = [t.detach() for t in as_stream_list(model, clips)]
    index = stream_index(model, stream)
    x = inputs[index]
    _check(perturbation, x)
    b, _, t = x.shape[:3]
    forward = StreamForward(model, inputs, index)
    all_rows = torch.arange(b)
    adam_beta1, adam_beta2, eps = 0.9, 0.999, 1e-8
    with frozen_eval(model):
        with torch.no_grad():
            logits = torch.cat([forward(x[s:s + batch_size], all_rows[s:s + batch_size])
                                for s in range(0, b, batch_size)])
        target = resolve_target(target, logits).cpu()
        original = class_scores(logits, target, score).cpu()

        # central initialisation: every candidate of every clip, batched
        if init == "central":
            candidates = central_masks(t).to(x)  # [T//2, T]
            n = candidates.shape[0]
            rows = all_rows.repeat_interleave(n)
            frozen = apply_freeze(x.repeat_interleave(n, dim=0), candidates.repeat(b, 1))
            cand_scores = _scores_in_chunks(forward, frozen, rows, target.repeat_interleave(n),
                                            batch_size, score).view(b, n).cpu()
            del frozen
            init_off = torch.tensor([
                choose_central(_ratios(float(original[i]), cand_scores[i, 1:].tolist(), float(cand_scores[i, 0])),
                               legacy_off_by_one)
                for i in range(b)
            ])
            start_masks = torch.stack([candidates[int(i)].cpu() for i in init_off])
        elif init == "full":
            init_off = torch.zeros(b, dtype=torch.long)
            start_masks = torch.ones(b, t)
        else:
            raise ValueError(f"init={init!r}; expected 'central' or 'full'")

        z = (start_masks * 2 - 1) * init_logit  # ±init_logit
        z = z.to(x)
        exp_avg, exp_avg_sq = torch.zeros_like(z), torch.zeros_like(z)
        previous = torch.full((b,), float("inf"))
        final_loss = torch.full((b,), float("nan"))
        steps_taken = torch.zeros(b, dtype=torch.long)
        active = torch.ones(b, dtype=torch.bool)
        for step in range(1, iterations + 1):
            live = active.nonzero().squeeze(1)
            if live.numel() == 0:
                break
            converged = []
            for start in range(0, live.numel(), batch_size):
                rows = live[start:start + batch_size]
                zr = z[rows].clone().requires_grad_(True)
                with torch.enable_grad():
                    m = torch.sigmoid(zr)
                    scores = class_scores(forward(perturb(x[rows], m, perturbation, reverse_threshold), rows),
                                          target[rows], score)
                    loss = mask_loss(m, scores, lambda1, lambda2, beta)
                    (grad,) = torch.autograd.grad(loss.sum(), zr)
                loss = loss.detach().cpu()
                final_loss[rows] = loss
                done = (loss - previous[rows]).abs() < stop_at if stop_at is not None else \
                    torch.zeros_like(loss, dtype=torch.bool)
                previous[rows] = loss
                move = rows[~done]
                if done.any():
                    converged.append(rows[done])
                if move.numel() == 0:
                    continue
                g = grad[~done]
                # torch.optim.Adam's update, written out so each clip can leave the batch
                exp_avg[move] = exp_avg[move].lerp(g, 1 - adam_beta1)
                exp_avg_sq[move] = exp_avg_sq[move] * adam_beta2 + (1 - adam_beta2) * g * g
                bias1, bias2 = 1 - adam_beta1**step, 1 - adam_beta2**step
                denom = exp_avg_sq[move].sqrt() / math.sqrt(bias2) + eps
                z[move] = z[move] - (lr / bias1) * exp_avg[move] / denom
                steps_taken[move] += 1
            for rows in converged:
                active[rows] = False

        mask = torch.sigmoid(z)
        with torch.no_grad():
            freeze_scores = _scores_in_chunks(forward, apply_freeze(x, mask), all_rows, target, batch_size,
                                              score).cpu()
            reverse_scores = _scores_in_chunks(forward, apply_reverse(x, mask, reverse_threshold), all_rows,
                                               target, batch_size, score).cpu()
    return _finish(mask.cpu(), original, freeze_scores, reverse_scores, target, steps_taken, init_off,
                   final_loss, perturbation, mask_threshold, min_drop, protocol)


# --------------------------------------------------------------------------------------------------
# the reference protocol


def temporal_mask_reference(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    perturbation: str = "freeze",
    *,
    stream: str | None = None,
    lambda1: float = 0.01,
    lambda2: float = 0.02,
    beta: float = 3.0,
    lr: float = 0.2,
    iterations: int = PAPER_ITERATIONS,
    init_logit: float = 5.0,
    legacy_off_by_one: bool = False,
    reverse_threshold: float = 0.1,
    mask_threshold: float = 0.5,
    min_drop: float = 0.001,
    score: str = "softmax",
) -> TemporalMaskResult:
    """The published procedure (the paper protocol), for tests and ``benchmarks/temporal_mask.py``: one clip at a time,
    ``iterations`` fixed ``torch.optim.Adam`` steps with ``loss.backward()``, the freeze recursion as
    a Python loop, central initialisation scanned one candidate at a time."""
    inputs = [tensor.detach() for tensor in as_stream_list(model, clips)]
    index = stream_index(model, stream)
    x = inputs[index]
    _check(perturbation, x)
    b, _, t = x.shape[:3]
    was_training = model.training
    model.eval()
    grads_before = [p.grad for p in model.parameters()]
    targets = None
    if target is not None:
        targets = torch.as_tensor(target, dtype=torch.long).reshape(-1)
        targets = targets.expand(b) if targets.numel() == 1 else targets
    results = []
    try:
        for i in range(b):
            row = torch.tensor([i])
            forward = StreamForward(model, inputs, index)
            clip = x[i:i + 1]
            with torch.no_grad():
                logits = forward(clip, row)
            tgt = resolve_target(None if targets is None else targets[i], logits).cpu()
            with torch.no_grad():
                original = float(class_scores(logits, tgt, score))
                full = float(class_scores(forward(freeze_reference(clip, torch.ones(1, t)), row), tgt, score))
                drop = original - full
                off = t // 2 - 1
                for k in range(1, t // 2):
                    candidate = torch.zeros(1, t)
                    candidate[0, k : t - k] = 1
                    s = float(class_scores(forward(freeze_reference(clip, candidate), row), tgt, score))
                    ratio = (original - s) / drop if drop > 0 else float("nan")
                    if not ratio >= 0.9:
                        off = k if legacy_off_by_one else k - 1
                        break
            start = torch.zeros(1, t)
            start[0, off : t - off] = 1
            z = ((start * 2 - 1) * init_logit).requires_grad_(True)
            optimiser = torch.optim.Adam([z], lr=lr)
            for _ in range(iterations):
                optimiser.zero_grad()
                m = torch.sigmoid(z)
                perturbed = _perturb_reference(clip, m, perturbation, reverse_threshold)
                loss = mask_loss(m, class_scores(forward(perturbed, row), tgt, score), lambda1, lambda2, beta)
                loss.sum().backward()
                optimiser.step()
            with torch.no_grad():
                m = torch.sigmoid(z)
                final_loss = float(mask_loss(m, class_scores(forward(_perturb_reference(
                    clip, m, perturbation, reverse_threshold), row), tgt, score), lambda1, lambda2, beta))
                fs = float(class_scores(forward(freeze_reference(clip, m), row), tgt, score))
                rs = float(class_scores(forward(reverse_reference(clip, m, reverse_threshold), row), tgt, score))
            results.append((m.detach()[0], original, fs, rs, int(tgt), off, final_loss))
    finally:
        for p, g in zip(model.parameters(), grads_before, strict=True):
            p.grad = g
        model.train(was_training)
    mask = torch.stack([r[0] for r in results])
    as_tensor = lambda k: torch.tensor([r[k] for r in results])  # noqa: E731
    return _finish(mask, as_tensor(1).float(), as_tensor(2).float(), as_tensor(3).float(),
                   as_tensor(4).long(), torch.full((b,), iterations), as_tensor(5).long(), as_tensor(6).float(),
                   perturbation, mask_threshold, min_drop)


# --------------------------------------------------------------------------------------------------
# registry entry


@EXPLAINERS.register("temporal-mask")
def explain_temporal_mask(model: nn.Module, inputs: list[torch.Tensor], *, target: Any = None,
                          stream: str | None = None, perturbation: str = "freeze", protocol: str = "paper",
                          iterations: int = PAPER_ITERATIONS, tolerance: float = 1e-5, batch_size: int = 32,
                          legacy_off_by_one: bool = False) -> Explanation:
    """Explainer ``temporal-mask``: :func:`temporal_mask` on a batch (``protocol`` "paper" = fixed
    iterations, or "early-stop"); ``perturbed`` is the freeze of each clip with its final mask (the third
    panel of Mänttäri 2020 Fig. 2)."""
    result = temporal_mask(model, inputs, target, perturbation, stream=stream, protocol=protocol,
                           iterations=iterations, tolerance=tolerance, batch_size=batch_size,
                           legacy_off_by_one=legacy_off_by_one)
    x = inputs[stream_index(model, stream)]
    with torch.no_grad():
        frozen = apply_freeze(x, result.mask.to(x))
    return Explanation(method="temporal-mask", targets=result.target.numpy(), mask=result.mask.numpy(),
                       perturbed=frozen.cpu().numpy(), values=result.rows())


__all__ = [
    "MASK_PROTOCOLS",
    "PAPER_ITERATIONS",
    "TemporalMaskResult",
    "apply_freeze",
    "apply_reverse",
    "central_masks",
    "choose_central",
    "drop_statistics",
    "freeze_reference",
    "freeze_weights",
    "mask_loss",
    "protocol_label",
    "reverse_permutation",
    "reverse_reference",
    "temporal_mask",
    "temporal_mask_reference",
    "total_variation",
]
