"""Saliency Tubes: class-weighted activation volumes of a 3D CNN's last conv layer (Stergiou 2021 §7.4,
Eq. 7.1, Fig. 7.5).

For the activations ``a`` (C' × T' × H' × W') of the explained layer and class ``i`` (default the
predicted one):

    z_{i→j} = minmax_R( f(a_j) ),   f(a_j) = y_{i,j} ⊗ a_j          (Eq. 7.1; constant maps -> 0)
    tube_i  = Σ_{j ∉ E} z_{i→j}²                                     (§7.4)

Channels in ``E`` are dropped: the thesis introduces a threshold τ without a rule; kinetoscope keeps a
channel when ``y_{i,j} > 0`` (a negative weight would invert its map) and ``minmax_j(y_{i,j} · mean a_j) ≥ τ``
(default τ = 0, i.e. every positively weighted channel). The tube is upsampled to the input with cubic
(C², order-3) splines, first over H, W and then over T (Fig. 7.5; ``scipy.ndimage.zoom`` per axis).
**Order** (``exact=True``, the default): the thesis' — each normalised map ``z_{i→j}`` is upsampled to
``T x H x W`` (§7.4: "we use third-order spline interpolation ... to fit the input"), clipped to [0, 1]
(a cubic spline overshoots), and only then squared and summed. Squaring does not commute with the
spline, so this differs from the shortcut ``exact=False`` — square and sum at the layer's resolution,
upsample the sum once (one spline pass instead of one per kept channel; ``benchmarks/saliency_tubes.py``
measures both) — wherever two maps overlap between knots. The result is min-max normalised over the
whole tube to [0, 1].

Class weights. The thesis reads ``y_{i,j}`` from the fully connected layer that follows global average
pooling of ``a``. Kinetoscope obtains them for any model from the gradient of the class logit with
respect to ``a``: for a GAP -> (dropout) -> linear head, ``∂y_i / ∂a_j(r) = W_{ij} / |R|`` at every
position r, so ``Σ_r ∂y_i/∂a_j(r) = W_{ij}`` and ``f(a_j)(r) = |R| · ∂y_i/∂a_j(r) · a_j(r)`` equals
``W_{ij} a_j(r)`` exactly (``tests/test_explain_tubes.py`` checks this against ``fc.weight``). For a
flatten -> linear head (``cnn3d``) the same expression gives each activation element its own class
weight ``W_{i,j,r}``; for other heads it is the first-order (linearised) weight. Deviation from the
released code (plain CAM, one min-max, no τ, no squares): the thesis is followed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from kinetoscope.explain.base import (
    ClipInput,
    Explanation,
    StreamForward,
    as_stream_list,
    capture_output,
    minmax,
    model_streams,
    resolve_target,
    stream_index,
)
from kinetoscope.explain.gradcam import explain_layer_name, resolve_layer
from kinetoscope.registry import EXPLAINERS


@functools.lru_cache(maxsize=64)
def spline_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The cubic-spline (order 3, C²) resampling of one axis from ``n_in`` to ``n_out`` samples as a matrix
    ``[n_in, n_out]``: row i is ``scipy.ndimage.zoom`` of the i-th unit impulse (knots at the centres of
    the coarse cells, ``grid_mode``; edges continued with ``mode="nearest"``). The spline is linear in its
    knots and separable over axes, so a volume is resampled by one matrix product per axis."""
    if n_in == n_out:
        return np.eye(n_in)
    return ndimage.zoom(np.eye(n_in), (1, n_out / n_in), order=3, mode="nearest", grid_mode=True)


def spline_upsample(volume: np.ndarray | torch.Tensor, size: tuple[int, int, int]) -> np.ndarray | torch.Tensor:
    """Cubic-spline upsampling of ``[..., T', H', W'] -> [..., T, H, W]`` (Stergiou 2021 Fig. 7.5: H and W,
    then T — the order does not change a tensor-product spline). NumPy in, NumPy out; a tensor stays a
    tensor (on its device, in its dtype)."""
    frames, height, width = size
    t0, h0, w0 = volume.shape[-3:]
    as_numpy = not isinstance(volume, torch.Tensor)
    x = torch.from_numpy(np.asarray(volume, dtype=np.float64)) if as_numpy else volume

    def matrix(n_in: int, n_out: int) -> torch.Tensor:
        return torch.from_numpy(spline_matrix(n_in, n_out)).to(device=x.device, dtype=x.dtype)

    x = x @ matrix(w0, width)  # [..., T', H', W]
    x = (x.transpose(-1, -2) @ matrix(h0, height)).transpose(-1, -2)  # [..., T', H, W]
    if t0 != frames:
        x = (x.movedim(-3, -1) @ matrix(t0, frames)).movedim(-1, -3)  # [..., T, H, W]
    return x.numpy() if as_numpy else x


def layer_class_weights(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    layer: str | nn.Module | None = None,
    *,
    stream: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations of the explained layer and their class weights, for a batch.

    Returns ``(a [B, C', T', H', W'], weights [B, C', T', H', W'], logits [B, K], targets [B])`` where
    ``weights = |R| · ∂y_target / ∂a`` — the fully connected layer's ``W[target, j]`` at every position
    for a GAP -> linear head (module docstring).
    """
    inputs = [t.detach() for t in as_stream_list(model, clips)]
    index = stream_index(model, stream)
    name = stream if stream is not None else model_streams(model)[index]
    module = resolve_layer(model, layer, name)
    forward = StreamForward(model, inputs, index)
    store: list[torch.Tensor] = []
    handle = capture_output(module, store)
    try:
        with torch.enable_grad():
            logits = forward(inputs[index].clone().requires_grad_(True))
    finally:
        handle.remove()
    if not store:
        raise RuntimeError(f"layer {layer or explain_layer_name(model, stream)!r} was not used in "
                           f"{type(model).__name__}.forward")
    activations = store[-1]
    if activations.dim() != 5:
        raise ValueError(f"Saliency Tubes need activations [B, C', T', H', W'] at the explained layer; "
                         f"{layer or explain_layer_name(model, stream)!r} gives {tuple(activations.shape)}")
    targets = resolve_target(target, logits.detach())
    score = logits.gather(1, targets.view(-1, 1)).sum()
    (grads,) = torch.autograd.grad(score, activations)
    volume = activations.shape[2] * activations.shape[3] * activations.shape[4]
    return activations.detach(), grads * volume, logits.detach(), targets


def tube_channels(activations: torch.Tensor, weights: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
    """Channels outside ``E``: ``[B, C']`` bool — ``y_{i,j} > 0`` and ``minmax_j(y_{i,j} · mean a_j) ≥ τ``.

    ``y_{i,j}`` is the volume mean of the per-position weights (``W[i, j]`` for GAP heads) and the
    channel's contribution ``mean_R(weights · a)`` (``W[i, j] · mean a_j`` for GAP heads).
    """
    class_weight = weights.mean(dim=(2, 3, 4))
    contribution = (weights * activations).mean(dim=(2, 3, 4))
    ranked = minmax(contribution, (1,))
    return (class_weight > 0) & (ranked >= tau)


def saliency_tube_volumes(
    activations: torch.Tensor,
    weights: torch.Tensor,
    size: tuple[int, int, int],
    tau: float = 0.0,
    exact: bool = True,
    chunk: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Tubes ``[B, T, H, W]`` in [0, 1] and the kept-channel mask ``[B, C']`` from activations and
    per-position class weights (both ``[B, C', T', H', W']``). ``exact``: upsample each map, then square
    and sum (Eq. 7.1's order, default); ``False``: square and sum, then upsample once."""
    keep = tube_channels(activations, weights, tau)
    z = minmax(weights * activations, (2, 3, 4)) * keep[:, :, None, None, None]  # Eq. 7.1
    tubes = []
    for b in range(z.shape[0]):
        if not exact:
            tube = spline_upsample((z[b] ** 2).sum(dim=0).double(), size)
        else:
            kept = z[b, keep[b]].double()
            tube = kept.new_zeros(size)
            for start in range(0, kept.shape[0], chunk):
                tube += spline_upsample(kept[start:start + chunk], size).clamp_(0.0, 1.0).square_().sum(dim=0)
        tube = tube.clamp(min=0.0).cpu().numpy()
        peak = tube.max()
        tubes.append((tube / peak if peak > 0 else tube).astype(np.float32))
    return np.stack(tubes), keep.cpu().numpy()


def saliency_tubes(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    layer: str | nn.Module | None = None,
    *,
    stream: str | None = None,
    tau: float = 0.0,
    exact: bool = True,
    batch_size: int = 8,
) -> torch.Tensor:
    """Saliency Tubes ``[B, T, H, W]`` in [0, 1] for ``clips [B, C, T, H, W]`` (Stergiou 2021 §7.4).

    ``target`` None = predicted class (or an int / one class per clip); ``layer`` a dotted module name
    (default ``model.explain_layer``); two-stream models: the ``stream`` to explain.
    """
    tubes, _, _ = _tubes_batched(model, clips, target, layer, stream=stream, tau=tau, exact=exact,
                                 batch_size=batch_size)
    return torch.from_numpy(tubes)


def _tubes_batched(model, clips, target, layer, *, stream, tau, exact, batch_size):
    inputs = [t.detach() for t in as_stream_list(model, clips)]
    x = inputs[stream_index(model, stream)]
    size = tuple(x.shape[2:])
    batch = x.shape[0]
    per_clip_target = None if target is None else torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if per_clip_target is not None and per_clip_target.numel() not in (1, batch):
        raise ValueError(f"target has {per_clip_target.numel()} entries for {batch} clips; "
                         "give one per clip or one int")
    was_training = model.training
    model.eval()
    tubes, kept, targets = [], [], []
    try:
        for start in range(0, batch, batch_size):
            rows = slice(start, min(start + batch_size, batch))
            chunk = [t[rows] for t in inputs]
            chunk_target = None
            if per_clip_target is not None:
                chunk_target = per_clip_target if per_clip_target.numel() == 1 else per_clip_target[rows]
            activations, weights, _, chosen = layer_class_weights(model, chunk, chunk_target, layer, stream=stream)
            volumes, keep = saliency_tube_volumes(activations, weights, size, tau, exact)
            tubes.append(volumes)
            kept.append(keep)
            targets.append(chosen.cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(tubes), np.concatenate(kept), np.concatenate(targets)


@EXPLAINERS.register("saliency-tubes")
def explain_saliency_tubes(model: nn.Module, inputs: list[torch.Tensor], *, target: Any = None,
                           stream: str | None = None, layer: str | None = None, tau: float = 0.0,
                           exact: bool = True) -> Explanation:
    """Explainer ``saliency-tubes``: class-weighted activation tubes of the explained layer (Stergiou 2021
    §7.4; ``exact=False`` = combine before upsampling). Values per clip: target, number of kept channels,
    peak position (frame, row, column)."""
    tubes, kept, targets = _tubes_batched(model, inputs, target, layer, stream=stream, tau=tau, exact=exact,
                                          batch_size=8)
    values = []
    for tube, keep, chosen in zip(tubes, kept, targets, strict=True):
        t, y, x = np.unravel_index(int(tube.argmax()), tube.shape)
        values.append({"target": int(chosen), "kept_channels": int(keep.sum()), "peak_frame": int(t),
                       "peak_row": int(y), "peak_col": int(x)})
    return Explanation(method="saliency-tubes", targets=targets.astype(np.int64), heatmaps=tubes, values=values)
