"""Grad-CAM for video with one weight per channel *per time step* (Mänttäri 2020 §3.2, Eq. 2; Broomé 2022
§5.2, Eq. 5.2; see docs/deviations.md, 'Grad-CAM on ConvLSTMs').

    L^c_{ijt} = ReLU(Σ_k w^c_{kt} A^k_{ijt}),    w^c_{kt} = (1 / Z) Σ_{ij} ∂F^c / ∂A^k_{ijt},  Z = H'W'

``A`` is the output of the model's ``explain_layer`` (a dotted module name resolved with
``model.get_submodule``): ``[B, K, T', H', W']`` for 3D CNNs (I3D: Mixed_5c, T' = T/2) and the hidden
states ``[B, h, T, H', W']`` of the last ConvLSTM layer. ``F^c`` is the class logit (
``score="softmax"`` uses the probability). ``time_pooled_weights=True`` averages the weights over
time too, as the authors' PyTorch I3D code does. Maps are upsampled bilinearly to the input frame
size; a coarser time axis is repeated over the input frames it covers (``time_upsampling="repeat"``)
or interpolated linearly (``"linear"``); then normalised to [0, 1] per frame (min-max, the default),
per sequence, or not at all.

Two-stream models are explained on a chosen ``stream`` (the other input passes through unchanged);
the layer defaults to ``model.explain_layer``, or ``model.explain_layers[stream]`` when the model
names one layer per stream.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.explain.base import (
    ClipInput,
    Explanation,
    StreamForward,
    as_stream_list,
    capture_output,
    class_scores,
    minmax,
    model_streams,
    resolve_target,
    stream_index,
)
from kinetoscope.registry import EXPLAINERS

NORMALISATIONS = ("frame", "sequence", "none")


def explain_layer_name(model: nn.Module, stream: str | None = None) -> str:
    """The module Grad-CAM looks at: ``model.explain_layers[stream]`` or ``model.explain_layer``."""
    per_stream = getattr(model, "explain_layers", None)
    if per_stream and stream is not None and stream in per_stream:
        return per_stream[stream]
    name = getattr(model, "explain_layer", None)
    if not name:
        raise ValueError(f"{type(model).__name__} has no explain_layer; pass layer='<dotted module name>' "
                         "(see model.named_modules())")
    return name


def resolve_layer(model: nn.Module, layer: str | nn.Module | None, stream: str | None = None) -> nn.Module:
    if isinstance(layer, nn.Module):
        return layer
    name = layer or explain_layer_name(model, stream)
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"layer {name!r} is not a module of {type(model).__name__}; modules include "
                         f"{', '.join(names)} …") from None


def normalise_maps(maps: torch.Tensor, mode: str = "frame") -> torch.Tensor:
    """Min-max to [0, 1] per frame or per sequence; ``maps [B, T, H, W]``. Constant maps become 0."""
    if mode == "none":
        return maps
    if mode not in NORMALISATIONS:
        raise ValueError(f"normalise={mode!r}; expected one of {NORMALISATIONS}")
    return minmax(maps, (2, 3) if mode == "frame" else (1, 2, 3))


def upsample_maps(maps: torch.Tensor, size: tuple[int, int, int], time_upsampling: str = "repeat") -> torch.Tensor:
    """``[B, T', H', W']`` -> ``[B, T, H, W]``: bilinear in space; in time, each coarse step repeated over
    the input frames it covers (frame t takes step ``floor(t T' / T)``) or linear interpolation."""
    b, steps, h, w = maps.shape
    frames, height, width = size
    spatial = F.interpolate(maps.reshape(b * steps, 1, h, w), size=(height, width), mode="bilinear",
                            align_corners=False).view(b, steps, height, width)
    if steps == frames:
        return spatial
    if time_upsampling == "repeat":
        source = (torch.arange(frames) * steps) // frames
        return spatial[:, source.to(spatial.device)]
    if time_upsampling == "linear":
        flat = spatial.permute(0, 2, 3, 1).reshape(b, height * width, steps)
        flat = F.interpolate(flat, size=frames, mode="linear", align_corners=False)
        return flat.view(b, height, width, frames).permute(0, 3, 1, 2)
    raise ValueError(f"time_upsampling={time_upsampling!r}; expected 'repeat' or 'linear'")


def gradcam_maps(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    layer: str | nn.Module | None = None,
    *,
    stream: str | None = None,
    time_pooled_weights: bool = False,
    score: str = "logit",
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw Grad-CAM at the layer's resolution: ``([B, T', H', W'] ≥ 0, targets [B])``."""
    inputs = [t.detach() for t in as_stream_list(model, clips)]
    index = stream_index(model, stream)
    module = resolve_layer(model, layer, stream if stream is not None else model_streams(model)[index])
    forward = StreamForward(model, inputs, index)
    x = inputs[index]
    was_training = model.training
    model.eval()
    maps, targets = [], []
    try:
        for start in range(0, x.shape[0], batch_size):
            rows = torch.arange(start, min(start + batch_size, x.shape[0]))
            store: list[torch.Tensor] = []
            handle = capture_output(module, store)
            try:
                with torch.enable_grad():
                    # the input requires grad so the layer's output is in a graph even when the
                    # parameters are frozen; autograd.grad below only walks from the score to the layer
                    logits = forward(x[rows].clone().requires_grad_(True), rows)
            finally:
                handle.remove()
            if not store:
                raise RuntimeError(f"layer {layer or explain_layer_name(model, stream)!r} was not used in "
                                   f"{type(model).__name__}.forward")
            activations = store[-1]
            if activations.dim() != 5 or activations.shape[0] != len(rows):
                raise ValueError(
                    f"Grad-CAM needs activations [B, K, T', H', W'] at the explained layer; "
                    f"{layer or explain_layer_name(model, stream)!r} gives {tuple(activations.shape)}"
                )
            chosen = resolve_target(None if target is None else _targets_for(target, rows, x.shape[0]), logits)
            scores = class_scores(logits, chosen, score)
            (grads,) = torch.autograd.grad(scores.sum(), activations)
            with torch.no_grad():
                dims = (2, 3, 4) if time_pooled_weights else (3, 4)
                weights = grads.mean(dim=dims, keepdim=True)  # w[b, k, t] (Eq. 2, Z = H'W')
                if time_pooled_weights:
                    weights = weights.expand(-1, -1, activations.shape[2], 1, 1)
                maps.append(torch.relu((weights * activations).sum(dim=1)).float())
            targets.append(chosen)
    finally:
        model.train(was_training)
    return torch.cat(maps), torch.cat(targets)


def _targets_for(target: Any, rows: torch.Tensor, batch: int) -> torch.Tensor:
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if target.numel() == 1:
        return target.expand(len(rows))
    if target.numel() != batch:
        raise ValueError(f"target has {target.numel()} entries for {batch} clips; give one per clip or one int")
    return target[rows]


def gradcam(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    layer: str | nn.Module | None = None,
    *,
    stream: str | None = None,
    time_pooled_weights: bool = False,
    normalise: str = "frame",
    time_upsampling: str = "repeat",
    score: str = "logit",
    batch_size: int = 16,
) -> torch.Tensor:
    """Grad-CAM heat-maps ``[B, T, H, W]`` in [0, 1] at the input resolution (Mänttäri 2020 Eq. 2).

    ``clips [B, C, T, H, W]`` (two-stream: list/dict and ``stream``); ``target`` None = predicted
    class; ``layer`` a dotted module name (default ``model.explain_layer``).
    """
    raw, _ = gradcam_maps(model, clips, target, layer, stream=stream, time_pooled_weights=time_pooled_weights,
                          score=score, batch_size=batch_size)
    x = as_stream_list(model, clips)[stream_index(model, stream)]
    return normalise_maps(upsample_maps(raw, tuple(x.shape[2:]), time_upsampling), normalise)


@EXPLAINERS.register("gradcam")
def explain_gradcam(model: nn.Module, inputs: list[torch.Tensor], *, target: Any = None,
                    stream: str | None = None, layer: str | None = None, time_pooled_weights: bool = False,
                    normalise: str = "frame", score: str = "logit") -> Explanation:
    """Explainer ``gradcam``: per-timestep Grad-CAM heat-maps for a batch."""
    raw, targets = gradcam_maps(model, inputs, target, layer, stream=stream,
                                time_pooled_weights=time_pooled_weights, score=score)
    x = inputs[stream_index(model, stream)]
    maps = normalise_maps(upsample_maps(raw, tuple(x.shape[2:])), normalise)
    return Explanation(method="gradcam", targets=targets.cpu().numpy(), heatmaps=maps.cpu().numpy(),
                       values=[{"target": int(t)} for t in targets.tolist()])
