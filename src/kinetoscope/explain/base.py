"""What every explainer shares: stream selection, class scores and the ``Explanation`` record.

Explainers (temporal masks, Grad-CAM, and later Saliency Tubes, Class Feature Pyramids, activation
maximisation) look at *one* input stream of a model. A one-stream model takes a tensor; a
two-stream model (``streams = ("rgb", "flow")``, ``forward(rgb, flow)``, docs/architecture.md conventions) is
explained on a chosen stream while the other is passed through unchanged. :class:`StreamForward`
wraps that choice so the methods only ever see ``f(x [B, C, T, H, W]) -> logits [B, K]``.

An explainer registered in ``kinetoscope.registry.EXPLAINERS`` is a callable
``(model, inputs: list[Tensor], *, target: Tensor | None, stream: str | None, **options) -> Explanation``
(``inputs`` in the order of ``model.streams``); ``explain.run.explain_run`` renders and indexes what it
returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kinetoscope.models.inference import STREAM_KEYS, clip_logits

ClipInput = torch.Tensor | Sequence[torch.Tensor] | Mapping[str, torch.Tensor]


def model_streams(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "streams", ("rgb",)))


def as_stream_list(model: nn.Module, clips: ClipInput) -> list[torch.Tensor]:
    """The model's inputs in ``model.streams`` order from a tensor, a sequence or a dict.

    A dict may be keyed by stream (``"rgb"``, ``"flow"``) or by batch key (``"video"``, ``"flow"``).
    """
    streams = model_streams(model)
    if isinstance(clips, torch.Tensor):
        if len(streams) != 1:
            raise ValueError(
                f"{type(model).__name__} takes {len(streams)} streams {streams}; pass a list in that "
                "order or a dict {stream: tensor}, not one tensor"
            )
        return [clips]
    if isinstance(clips, Mapping):
        out = []
        for stream in streams:
            key = stream if stream in clips else STREAM_KEYS.get(stream, stream)
            if key not in clips:
                raise KeyError(f"clips has no {stream!r} stream (keys {sorted(clips)}); "
                               f"{type(model).__name__} needs {streams}")
            out.append(clips[key])
        return out
    clips = list(clips)
    if len(clips) != len(streams):
        raise ValueError(f"{type(model).__name__} takes streams {streams}; got {len(clips)} tensors")
    return clips


def stream_index(model: nn.Module, stream: str | None) -> int:
    """Position of ``stream`` in ``model.streams`` (default: the first stream)."""
    streams = model_streams(model)
    if stream is None:
        return 0
    if stream not in streams:
        raise ValueError(f"stream={stream!r}: {type(model).__name__} has streams {streams}")
    return streams.index(stream)


class StreamForward:
    """``f(x, rows=None) -> clip logits [b, K]``: the model with stream ``index`` replaced by ``x``.

    ``rows`` (a LongTensor) selects which clips of the fixed other streams go with ``x`` — used when
    only some clips of a batch are still being optimised.
    """

    def __init__(self, model: nn.Module, inputs: list[torch.Tensor], index: int) -> None:
        self.model, self.inputs, self.index = model, inputs, index

    @property
    def clips(self) -> torch.Tensor:
        return self.inputs[self.index]

    def __call__(self, x: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        args = []
        for i, tensor in enumerate(self.inputs):
            if i == self.index:
                args.append(x)
            else:
                args.append(tensor if rows is None else tensor[rows])
        return clip_logits(self.model(*args))


def class_scores(logits: torch.Tensor, target: torch.Tensor, kind: str = "softmax") -> torch.Tensor:
    """Score of class ``target[b]`` for every clip: ``"softmax"`` probability or raw ``"logit"``."""
    if kind == "softmax":
        values = torch.softmax(logits.float(), dim=-1)
    elif kind == "logit":
        values = logits.float()
    else:
        raise ValueError(f"score={kind!r}; expected 'softmax' or 'logit'")
    return values.gather(1, target.view(-1, 1).to(values.device)).squeeze(1)


def resolve_target(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """Per-clip target classes ``[B]``: the predicted class when ``target`` is None, else an int or one
    class per clip."""
    batch = logits.shape[0]
    if target is None:
        return logits.argmax(dim=1)
    target = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
    if target.numel() == 1:
        target = target.expand(batch).clone()
    if target.numel() != batch:
        raise ValueError(f"target has {target.numel()} entries for {batch} clips; give one per clip or one int")
    if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
        raise ValueError(f"target {target.tolist()} outside the {logits.shape[1]} classes of the model")
    return target


def minmax(values: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max to [0, 1] over ``dims``; a constant slice becomes 0 (Grad-CAM maps, Saliency Tubes, CFP)."""
    low = values.amin(dim=dims, keepdim=True)
    span = values.amax(dim=dims, keepdim=True) - low
    return torch.where(span > 0, (values - low) / span.clamp_min(1e-12), torch.zeros_like(values))


def capture_output(layer: nn.Module, store: list[torch.Tensor]) -> torch.utils.hooks.RemovableHandle:
    """Append ``layer``'s output (the first element of a tuple output) to ``store`` on every forward."""

    def hook(_module, _inputs, output):
        store.append(output[0] if isinstance(output, (tuple, list)) else output)

    return layer.register_forward_hook(hook)


@contextlib.contextmanager
def frozen_eval(model: nn.Module, freeze_parameters: bool = True) -> Iterator[nn.Module]:
    """Eval mode (BN running statistics, no dropout) and, optionally, parameters without gradients;
    restores both afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    if freeze_parameters:
        for p in model.parameters():
            p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)


@dataclass
class Explanation:
    """What an explainer returns for a batch of B clips of T frames.

    ``heatmaps`` ``[B, T, H, W]`` in [0, 1] (spatial methods), ``mask`` ``[B, T]`` in [0, 1] (temporal
    methods), ``perturbed`` ``[B, C, T, H, W]`` (the input as the method perturbed it), ``targets``
    ``[B]`` class indices, ``values`` one dict of numbers per clip (written to ``index.csv``).
    """

    method: str
    targets: np.ndarray
    heatmaps: np.ndarray | None = None
    mask: np.ndarray | None = None
    perturbed: np.ndarray | None = None
    values: list[dict[str, Any]] = field(default_factory=list)
