"""Activation maximisation for video models: the input clip (and flow clip) that most excites a unit or a
class (Feichtenhofer 2017 ch. 6 §6.3, Eqs. 6.1–6.7, §6.4; see docs/deviations.md,
'Activation maximisation: regulariser sums, λ_TV and iterations').

    x* = argmax_x  (1 / (ρ_l² · â_{l,c})) · ⟨a_l(x), e_c⟩ − Σ_r λ_r R_r(x)                    (Eq. 6.1)

* ``a_l(x)`` the activations of layer ``l`` (a dotted module name; ``layer=None`` = the class logits),
  ``e_c`` selects channel ``c`` (``target``). For a conv layer the unit is the channel at the centre of
  the map (``unit="centre"``, as in Mahendran & Vedaldi) or its mean over the map (``unit="mean"``).
* ``ρ_l`` the receptive-field size of the unit in input pixels, measured as the spatial extent of the
  unit's input gradient (the whole frame for class logits); ``â_{l,c}`` the largest activation of the
  unit on the clips passed in (the "validation data"; its magnitude when it is not positive, 1 when 0).
* ``R_B(x) = Σ_{i,j,k} (Σ_d x²)^{α/2}``, +∞ when any pixel norm exceeds ``B`` (Eq. 6.2, summed over
  i, j, k — see docs/deviations.md). The +∞ barrier is enforced by projecting every pixel onto the ball of
  radius B after each step; the finite part is the penalty.
* ``TV2D`` squared spatial forward differences (Eq. 6.3); ``TV3D(κ) = κ·(spatial + temporal)`` (Eq. 6.4);
  ``TV2D1D(χ) = spatial + χ·temporal`` (Eq. 6.5; χ = 0 is TV2D). Appearance (rgb) streams use
  ``R_B + TV2D``; motion (flow) streams ``R_B + TV_m``, ``m`` = ``regulariser`` (Eq. 6.7).
* Constants (§6.4): α = 3, B = 160, V = B / 6.5, ``λ_B = 1 / (H W B^α)``, ``λ_TV,rgb = 1 / (H W V²)``
  ("HWW²" is a typo), ``λ_TV,flow = 10 λ_TV,rgb`` for every motion regulariser; the sweeps
  use κ ∈ {10, 5, 2.5, 1}, χ ∈ {10, 5, 1, 0}.
* Balance (deviation): with these λ each regulariser is O(1) per frame while Eq. 6.1's data term is
  ``1/ρ²`` at the data maximum â (10⁻³ for ρ = 32): taken literally, the optimisation only smooths the
  random start (measured on cnn3d: the class logit moved by < 1%). The thesis chose the trade-offs "to
  provide similar weights for the different terms" (§6.3); kinetoscope multiplies the data term by
  ``data_weight`` (default ρ², so a unit at â scores 1) and averages the regularisers over the T frames
  (λ normalises by H·W per frame). ``data_weight=1`` gives Eq. 6.1 with the literal λ.
* Units: the constants are in 8-bit pixel levels of a mean-subtracted input (Mahendran & Vedaldi's
  convention). ``x`` is optimised in those units and the model sees ``offset + pixel_scale · x``, with
  ``offset`` the per-channel mean of the given clips and ``pixel_scale = 1/255`` for kinetoscope's
  [0, 1] videos (a dict gives one scale per stream).
* Optimiser (§6.3): the AdaGrad variant of Mahendran & Vedaldi — per-element steps scaled by the root of
  the squared gradients accumulated over a sliding window (an exponential window, ``decay``, as in
  AdaDelta), ``x ← x + η_t g / (√G + ε)``, with ``η_t`` decreasing linearly from ``step_size`` to
  ``step_size / 10``; started from a random input. Iterations and step size are not given in the thesis
  (docs/deviations.md): ``steps=200``, ``step_size=B/40`` pixel levels.

Every clip of the batch is optimised independently (its own random start and target; the model is in
eval mode, so the clips do not interact), which makes the optimisation of B targets one batched run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kinetoscope.explain.base import (
    ClipInput,
    Explanation,
    as_stream_list,
    frozen_eval,
    model_streams,
    stream_index,
)
from kinetoscope.models.inference import clip_logits
from kinetoscope.registry import EXPLAINERS

REGULARISERS = ("tv2d", "tv3d", "tv2d1d")
ALPHA = 3.0
BOUND = 160.0
V_RATIO = 6.5
FLOW_TV_FACTOR = 10.0


def pixel_norms(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(Σ_d x²)`` per pixel: ``[B, C, T, H, W] -> [B, T, H, W]``."""
    return x.pow(2).sum(dim=1).sqrt()


def bound_regulariser(x: torch.Tensor, alpha: float = ALPHA, bound: float | None = BOUND) -> torch.Tensor:
    """``R_B(x) = Σ_{i,j,k} (Σ_d x²)^{α/2}`` per clip ``[B]``; +∞ for a clip with a pixel norm above ``bound``
    (Eq. 6.2). ``bound=None`` gives the finite part only (the optimisation enforces the bound by projection)."""
    squared = x.pow(2).sum(dim=1)
    value = squared.clamp_min(0).pow(alpha / 2).flatten(1).sum(dim=1)
    if bound is None:
        return value
    outside = (squared.flatten(1).amax(dim=1) > bound * bound)
    return torch.where(outside, torch.full_like(value, float("inf")), value)


def _spatial_tv(x: torch.Tensor) -> torch.Tensor:
    rows = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(dim=1)
    cols = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).sum(dim=1)
    return rows + cols


def _temporal_tv(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, 1:] - x[:, :, :-1]).pow(2).flatten(1).sum(dim=1)


def tv2d(x: torch.Tensor) -> torch.Tensor:
    """``R_TV2D`` per clip ``[B]``: squared forward differences along H and W, summed over every frame and
    channel; time is not penalised (Eq. 6.3). ``x [B, C, T, H, W]``."""
    return _spatial_tv(x)


def tv3d(x: torch.Tensor, kappa: float) -> torch.Tensor:
    """``R_TV3D(x, κ) = κ · Σ (Δ_H² + Δ_W² + Δ_T²)`` per clip ``[B]`` (Eq. 6.4)."""
    return kappa * (_spatial_tv(x) + _temporal_tv(x))


def tv2d1d(x: torch.Tensor, chi: float) -> torch.Tensor:
    """``R_TV2D1D(x, χ) = Σ (Δ_H² + Δ_W²) + χ · Σ Δ_T²`` per clip ``[B]`` (Eq. 6.5; χ = 0 gives TV2D)."""
    return _spatial_tv(x) + chi * _temporal_tv(x)


def regulariser_weights(height: int, width: int, motion: bool, alpha: float = ALPHA,
                        bound: float = BOUND) -> tuple[float, float]:
    """``(λ_B, λ_TV)`` of §6.4: ``1 / (H W B^α)`` and ``1 / (H W V²)`` (×10 for motion), ``V = B / 6.5``."""
    v = bound / V_RATIO
    lambda_tv = 1.0 / (height * width * v * v)
    return 1.0 / (height * width * bound**alpha), lambda_tv * (FLOW_TV_FACTOR if motion else 1.0)


def total_variation(x: torch.Tensor, regulariser: str, kappa: float = 1.0, chi: float = 1.0) -> torch.Tensor:
    """The named TV regulariser per clip ``[B]``: ``"tv2d"``, ``"tv3d"`` (κ) or ``"tv2d1d"`` (χ)."""
    if regulariser == "tv2d":
        return tv2d(x)
    if regulariser == "tv3d":
        return tv3d(x, kappa)
    if regulariser == "tv2d1d":
        return tv2d1d(x, chi)
    raise ValueError(f"regulariser={regulariser!r}; expected one of {REGULARISERS}")


def project_to_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale every pixel whose norm exceeds ``bound`` back onto the sphere of radius ``bound``."""
    norms = pixel_norms(x).unsqueeze(1)
    return x * torch.clamp(bound / norms.clamp_min(1e-12), max=1.0)


@dataclass
class ActivationMaximum:
    """Result for B clips: ``pixels`` per stream ``[B, C, T, H, W]`` in pixel levels (what the
    regularisers see), ``inputs`` what the model saw; ``activation`` the unit's raw activation per step
    ``[steps + 1, B]``; ``objective`` Eq. 6.1 per step ``[steps + 1, B]``; ``reference`` â per clip's
    target; ``receptive_field`` ρ."""

    targets: np.ndarray
    pixels: list[torch.Tensor]
    inputs: list[torch.Tensor]
    activation: np.ndarray
    objective: np.ndarray
    reference: np.ndarray
    receptive_field: int
    streams: tuple[str, ...] = field(default_factory=tuple)

    @property
    def initial_activation(self) -> np.ndarray:
        return self.activation[0]

    @property
    def final_activation(self) -> np.ndarray:
        return self.activation[-1]


class _UnitReader:
    """``unit(inputs) -> [B]``: the target channel's activation at ``layer`` (or the class logit)."""

    def __init__(self, model: nn.Module, layer: str | None, unit: str) -> None:
        if unit not in ("centre", "mean"):
            raise ValueError(f"unit={unit!r}; expected 'centre' or 'mean'")
        self.model, self.layer, self.unit = model, layer, unit
        self.module = None
        if layer is not None:
            try:
                self.module = model.get_submodule(layer)
            except AttributeError:
                raise ValueError(f"layer {layer!r} is not a module of {type(model).__name__}") from None

    def __call__(self, inputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if self.module is None:
            logits = clip_logits(self.model(*inputs))
            bad = targets[(targets < 0) | (targets >= logits.shape[1])]
            if bad.numel():
                raise ValueError(f"target class {int(bad[0])} outside the {logits.shape[1]} classes of the model")
            return logits.gather(1, targets.view(-1, 1)).squeeze(1)
        store: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(
            # a clone: a following in-place activation (ReLU(inplace=True)) must not overwrite the unit
            lambda _m, _i, out: store.append((out[0] if isinstance(out, (tuple, list)) else out).clone()))
        try:
            self.model(*inputs)
        finally:
            handle.remove()
        activations = store[-1]
        bad = targets[(targets < 0) | (targets >= activations.shape[1])]
        if bad.numel():
            raise ValueError(f"target channel {int(bad[0])} outside the {activations.shape[1]} channels "
                             f"of layer {self.layer!r}")
        rows = torch.arange(activations.shape[0])
        chosen = activations[rows, targets]  # [B, ...]
        if self.unit == "mean" or chosen.dim() == 1:
            return chosen.flatten(1).mean(dim=1) if chosen.dim() > 1 else chosen
        centre = tuple(size // 2 for size in chosen.shape[1:])
        return chosen[(slice(None), *centre)]


def receptive_field(reader: _UnitReader, inputs: list[torch.Tensor], targets: torch.Tensor) -> int:
    """Spatial extent (pixels, the larger of height and width) of the unit's input gradient on the first
    clip — ρ_l of Eq. 6.1. Class logits and mean units cover the whole frame."""
    height, width = inputs[0].shape[-2:]
    if reader.module is None or reader.unit == "mean":
        return int(max(height, width))
    probe = [t[:1].clone().requires_grad_(True) for t in inputs]
    with torch.enable_grad():
        grads = torch.autograd.grad(reader(probe, targets[:1]).sum(), probe, allow_unused=True)
    support = sum((g.abs().sum(dim=(0, 1, 2)) for g in grads if g is not None), torch.zeros(height, width)) > 0
    if not support.any():
        return int(max(height, width))
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    return int(max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1))


def activation_maximisation(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    layer: str | None = None,
    *,
    unit: str = "centre",
    optimise: tuple[str, ...] | None = None,
    regulariser: str = "tv2d",
    kappa: float = 1.0,
    chi: float = 1.0,
    alpha: float = ALPHA,
    bound: float = BOUND,
    pixel_scale: float | Mapping[str, float] = 1.0 / 255.0,
    steps: int = 200,
    step_size: float | None = None,
    decay: float = 0.9,
    seed: int = 0,
    data_weight: float | None = None,
) -> ActivationMaximum:
    """Optimise one input per clip of ``clips [B, C, T, H, W]`` (two-stream: list/dict) to excite its target.

    ``target``: class (``layer=None``) or channel of ``layer``; None = each clip's predicted class.
    ``clips`` give the shape, the offset (per-channel mean) and â (the unit's maximum over them).
    ``optimise``: the streams whose inputs are optimised (default all, as in the thesis; the others stay
    the given clips). ``regulariser`` ("tv2d" | "tv3d" | "tv2d1d", with ``kappa`` / ``chi``) applies to
    flow streams; rgb streams always use TV2D. Returns :class:`ActivationMaximum`.
    """
    if regulariser not in REGULARISERS:
        raise ValueError(f"regulariser={regulariser!r}; expected one of {REGULARISERS}")
    if steps < 1:
        raise ValueError(f"steps={steps}; give at least one optimisation step")
    streams = model_streams(model)
    chosen = streams if optimise is None else tuple(optimise)
    for name in chosen:
        if name not in streams:
            raise ValueError(f"optimise={chosen!r}: {type(model).__name__} has streams {streams}")
    references = [t.detach().float() for t in as_stream_list(model, clips)]
    batch = references[0].shape[0]
    step_size = bound / 40.0 if step_size is None else step_size
    scales = [float(pixel_scale[s] if isinstance(pixel_scale, Mapping) else pixel_scale) for s in streams]
    generator = torch.Generator().manual_seed(seed)
    reader = _UnitReader(model, layer, unit)
    with frozen_eval(model):
        with torch.no_grad():
            if target is None and layer is None:
                targets = clip_logits(model(*references)).argmax(dim=1)
            elif target is None:
                raise ValueError("target: give the channel of layer "
                                 f"{layer!r} to maximise (None picks the predicted class only for layer=None)")
            else:
                targets = torch.as_tensor(target, dtype=torch.long).reshape(-1).expand(batch).clone() \
                    if torch.as_tensor(target).numel() == 1 else torch.as_tensor(target, dtype=torch.long)
            if targets.numel() != batch:
                raise ValueError(f"target has {targets.numel()} entries for {batch} clips")
            reference_activation = reader(references, targets)
        reference = reference_activation.max().expand(batch).clone()
        for b in range(batch):  # â: the largest activation of the clip's target unit on the given clips
            same = targets == targets[b]
            reference[b] = reference_activation[same].max()
        magnitude = reference.abs()
        normaliser_scale = torch.where(magnitude > 1e-6, magnitude, torch.ones_like(magnitude))
        rho = receptive_field(reader, references, targets)
        weight = float(rho**2 if data_weight is None else data_weight)
        offsets = [r.mean(dim=(0, 2, 3, 4), keepdim=True) for r in references]
        pixels = {}
        for i, name in enumerate(streams):
            if name in chosen:
                noise = torch.randn(references[i].shape, generator=generator) * (bound / 100.0)
                pixels[i] = project_to_bound(noise, bound)
        accumulated = {i: torch.zeros_like(x) for i, x in pixels.items()}

        def evaluate(current: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            inputs = [offsets[i] + scales[i] * current[i] if i in current else references[i]
                      for i in range(len(streams))]
            activation = reader(inputs, targets)
            objective = weight * activation / (rho**2 * normaliser_scale)
            for i, x in current.items():
                frames, height, width = x.shape[-3:]
                motion = streams[i] == "flow"
                lambda_b, lambda_tv = regulariser_weights(height, width, motion, alpha, bound)
                tv = total_variation(x, regulariser if motion else "tv2d", kappa, chi)
                penalty = lambda_b * bound_regulariser(x, alpha, None) + lambda_tv * tv
                objective = objective - penalty / frames
            return activation, objective

        activations, objectives = [], []
        for step in range(steps + 1):
            current = {i: x.clone().requires_grad_(True) for i, x in pixels.items()}
            with torch.enable_grad():
                activation, objective = evaluate(current)
                grads = torch.autograd.grad(objective.sum(), list(current.values()))
            activations.append(activation.detach().numpy().copy())
            objectives.append(objective.detach().numpy().copy())
            if step == steps:
                break
            rate = step_size * (1.0 - 0.9 * step / max(steps - 1, 1))
            for (i, x), grad in zip(list(pixels.items()), grads, strict=True):
                accumulated[i] = decay * accumulated[i] + (1.0 - decay) * grad.pow(2)
                pixels[i] = project_to_bound(x + rate * grad / (accumulated[i].sqrt() + 1e-8), bound)
    final_inputs = [(offsets[i] + scales[i] * pixels[i]) if i in pixels else references[i]
                    for i in range(len(streams))]
    return ActivationMaximum(
        targets=targets.numpy(),
        pixels=[pixels.get(i, (references[i] - offsets[i]) / scales[i]) for i in range(len(streams))],
        inputs=final_inputs,
        activation=np.stack(activations),
        objective=np.stack(objectives),
        reference=reference.numpy(),
        receptive_field=rho,
        streams=streams,
    )


def display_clip(pixels: torch.Tensor) -> np.ndarray:
    """Min-max over the whole sequence to [0, 1] for display (§6.4): ``[B, C, T, H, W]`` per clip."""
    flat = pixels.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1, 1, 1)
    span = (flat.max(dim=1).values.view(-1, 1, 1, 1, 1) - low).clamp_min(1e-12)
    return ((pixels - low) / span).numpy().astype(np.float32)


@EXPLAINERS.register("actmax")
def explain_actmax(model: nn.Module, inputs: list[torch.Tensor], *, target: Any = None, stream: str | None = None,
                   layer: str | None = None, unit: str = "centre", regulariser: str = "tv2d", kappa: float = 1.0,
                   chi: float = 1.0, steps: int = 200, step_size: float | None = None, seed: int = 0) -> Explanation:
    """Explainer ``actmax``: per clip, the input that maximises its target (predicted class by default).

    ``perturbed`` holds the optimised ``stream`` (default the first) min-max normalised for display
    ``[B, C, T, H, W]``; values give the unit's activation at the random start and at the end, â, and ρ.
    """
    result = activation_maximisation(model, inputs, target, layer, unit=unit, regulariser=regulariser, kappa=kappa,
                                     chi=chi, steps=steps, step_size=step_size, seed=seed)
    index = stream_index(model, stream)
    values = [{"target": int(t), "initial_activation": float(a0), "final_activation": float(a1),
               "reference_activation": float(ref), "receptive_field": result.receptive_field,
               "regulariser": regulariser}
              for t, a0, a1, ref in zip(result.targets, result.initial_activation, result.final_activation,
                                        result.reference, strict=True)]
    return Explanation(method="actmax", targets=result.targets.astype(np.int64),
                       perturbed=display_clip(result.pixels[index]), values=values)
