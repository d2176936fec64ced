"""Every registered model builds, runs forward and backward on a small clip, and declares the attributes
the rest of the toolkit relies on (docs/architecture.md conventions: ``streams``, ``per_frame``, ``explain_layer``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.models import create_model, list_models
from kinetoscope.models.profile import example_inputs
from kinetoscope.registry import MODELS

NUM_CLASSES = 3
# (C, T, H, W) of the smallest clip each model takes; everything else runs on SMALL_CLIP.
SMALL_CLIP = (3, 8, 32, 32)
SMALLEST_CLIP: dict[str, tuple[int, int, int, int]] = {
    "clstm_accv": (3, 4, 64, 64),  # three stride-2 ConvLSTMs + pools: 64 -> ... -> 1
    "inception_v3": (3, 2, 75, 75),  # the smallest frame InceptionV3's valid convolutions take
    "inception_v3_2": (3, 2, 75, 75),
}
KNOWN_STREAMS = {("rgb",), ("rgb", "flow"), ("flow",)}


def build_small(name: str) -> tuple[nn.Module, tuple[int, int, int, int]]:
    shape = SMALLEST_CLIP.get(name, SMALL_CLIP)
    options = MODELS.options(name)
    small = {}
    if "input_size" in options:
        small["input_size"] = shape[2]
    if "frames" in options:
        small["frames"] = shape[1]
    if name == "timesformer":  # patch 16 on 32x32 frames; two heads of width 4 keep it tiny
        small.update(hidden=4, heads=2, depth=2)
    torch.manual_seed(0)
    return create_model(name, num_classes=NUM_CLASSES, in_channels=shape[0], **small), shape


def _task(name: str) -> str:
    """A model's task, read off an instance built on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        return getattr(build_small(name)[0], "task", "classification")


# detectors (Detect & Track) return boxes, not logits: tests/test_detect_track.py covers their conventions
CLASSIFIERS = [n for n in list_models() if _task(n) == "classification"]


def test_only_detectors_are_left_out_of_the_classifier_conventions() -> None:
    assert {n for n in list_models() if n not in CLASSIFIERS} == {n for n in list_models() if _task(n) == "detection"}
    assert len(CLASSIFIERS) > 40


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_model_runs_forward_and_backward_and_declares_its_conventions(name: str) -> None:
    model, shape = build_small(name)
    assert tuple(model.streams) in KNOWN_STREAMS
    per_frame = getattr(model, "per_frame", None)
    assert isinstance(per_frame, bool)
    layer = model.get_submodule(model.explain_layer)  # raises AttributeError if the name is not real
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    model.train()
    logits = model(*example_inputs(model, shape, batch=2))
    handle.remove()
    assert captured, f"{name}: explain_layer {model.explain_layer!r} is not used in forward"
    assert logits.shape[0] == 2 and logits.shape[-1] == NUM_CLASSES
    assert logits.ndim == (3 if per_frame else 2)
    assert torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
