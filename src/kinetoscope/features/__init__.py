"""Features of any named layer of a model: the input of multiple-instance learning over long videos
(Broomé 2022 §3.3: a clip-level feature sequence per video) and of temporal action localisation.

``extract(model, clips, layer)`` runs one forward and returns what ``layer`` put out, pooled over
space and time by default. ``kinetoscope features`` (:func:`kinetoscope.features.run.extract_features`)
applies it to dense windows of whole videos and writes one ``<video_id>.npy`` per video.

Pooling: a layer whose output is laid out ``[B, C, ...]`` (convolutions, ConvLSTM, pooling) is averaged
(``"mean"``) or maxed (``"max"``) over every axis after ``C``; token layers (``Linear``, ``LayerNorm``,
attention: ``[B, N, D]``) over the tokens. ``"none"`` keeps the whole map. A layer that runs several
times in one forward (a recurrent cell stepping through time) gives its outputs stacked on a new time
axis ``[B, C, T, ...]`` before pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

POOLS = ("mean", "max", "none")
_TOKEN_LAYERS = (nn.Linear, nn.LayerNorm, nn.MultiheadAttention)


def layer_names(model: nn.Module) -> list[str]:
    """Names of every sub-module of ``model`` (``model.named_modules()`` without the model itself)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, layer: str) -> nn.Module:
    """The sub-module called ``layer``; an unknown name is an error that lists the valid ones."""
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        names = layer_names(model)
        shown = ", ".join(names) if len(names) <= 60 else ", ".join(names[:60]) + f", ... ({len(names)} in all)"
        raise KeyError(f"{type(model).__name__} has no layer {layer!r}; valid layers: {shown} "
                       "(`kinetoscope models info NAME --layers` lists them with output shapes)")
    return modules[layer]


def default_layer(model: nn.Module) -> str:
    """The layer features come from when none is named: the input of the classifier, i.e. the model's
    ``explain_layer`` (its last spatio-temporal map) pooled — the usual clip embedding."""
    name = getattr(model, "explain_layer", None)
    if not name:
        raise ValueError(f"{type(model).__name__} names no explain_layer; pass a layer explicitly")
    return name


def pool_features(output: torch.Tensor, pool: str, *, channels_last: bool = False) -> torch.Tensor:
    """``[B, C, ...]`` (or ``[B, N, D]`` with ``channels_last``) -> ``[B, C]`` by ``pool``; ``"none"`` keeps it."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}; expected one of {POOLS}")
    if pool == "none" or output.ndim <= 2:
        return output
    if channels_last:
        dims = tuple(range(1, output.ndim - 1))
    else:
        dims = tuple(range(2, output.ndim))
    return output.mean(dim=dims) if pool == "mean" else output.amax(dim=dims)


def _as_inputs(model: nn.Module, clips: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    streams = tuple(getattr(model, "streams", ("rgb",)))
    inputs = [clips] if isinstance(clips, torch.Tensor) else list(clips)
    if len(inputs) != len(streams):
        raise ValueError(f"{type(model).__name__} takes streams {streams}; got {len(inputs)} input tensor(s)")
    return inputs


@torch.inference_mode()
def extract(
    model: nn.Module, clips: torch.Tensor | Sequence[torch.Tensor], layer: str | None = None, pool: str = "mean"
) -> torch.Tensor:
    """Output of ``layer`` for ``clips`` ``[B, C, T, H, W]`` (a list in ``model.streams`` order for two
    streams): ``[B, D]`` pooled, or the layer's whole output with ``pool="none"``. ``layer=None`` takes
    the model's ``explain_layer``. The model is put in eval mode; inputs are used as given."""
    if pool not in POOLS:
        raise ValueError(f"pool={pool!r}; expected one of {POOLS}")
    name = layer or default_layer(model)
    module = get_layer(model, name)
    channels_last = isinstance(module, _TOKEN_LAYERS)
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        tensor = output[0] if isinstance(output, (tuple, list)) else output
        # pooled (or copied) at once: a later in-place op (ReLU(inplace=True)) must not change it
        outputs.append(tensor.float().clone() if pool == "none" else pool_features(
            tensor.float(), pool, channels_last=channels_last))

    model.eval()
    handle = module.register_forward_hook(hook)
    try:
        model(*_as_inputs(model, clips))
    finally:
        handle.remove()
    if not outputs:
        raise ValueError(f"layer {name!r} did not run in the forward pass of {type(model).__name__}")
    if len(outputs) == 1:
        return outputs[0]
    if pool == "none":
        return torch.stack(outputs, dim=1 if channels_last else 2)
    # equal-sized calls: the mean (max) over all steps is the mean (max) of the per-step pools
    stacked = torch.stack(outputs, dim=-1)
    return stacked.mean(dim=-1) if pool == "mean" else stacked.amax(dim=-1)


@torch.inference_mode()
def layer_shapes(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """``(name, module type, output shape of the first call or None if it did not run)`` for every layer
    of ``model`` on ``inputs`` (one forward)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(_module, _inputs, output, name=name):
            tensor = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(tensor, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(tensor.shape)

        handles.append(module.register_forward_hook(hook))
    model.eval()
    try:
        model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, type(module).__name__, shapes.get(name)) for name, module in model.named_modules() if name]


__all__ = ["POOLS", "default_layer", "extract", "get_layer", "layer_names", "layer_shapes", "pool_features"]
