"""Architectures, each registered by name: ``create_model(name, num_classes, in_channels, **options)``.

Every module in this package is imported on first use, so a new model file only needs its
``@register_model`` decorator. Conventions (docs/architecture.md): ``forward(x)`` for one stream or
``forward(rgb, flow)`` for two (class attribute ``streams``), logits ``[B, K]`` (or ``[B, T, K]``
with ``per_frame = True``), and ``explain_layer`` naming the module Grad-CAM should look at.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from kinetoscope.registry import MODELS, register_model

_loaded = False


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def list_models() -> list[str]:
    """All registered model names."""
    _load_all()
    return MODELS.names()


def model_options(name: str) -> dict[str, Any]:
    """The options a model builder takes, with their defaults."""
    _load_all()
    return MODELS.options(name)


def create_model(name: str, num_classes: int, in_channels: int = 3, **options: Any):
    """Build a registered model. Unknown names and options raise errors that list the valid ones."""
    _load_all()
    MODELS.check_options(name, options)
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels, **options)


def model_info(name_or_model: Any, input_shape: tuple[int, ...] = (3, 16, 112, 112), **kwargs: Any) -> dict:
    """Parameters, FLOPs, activation memory and CPU latency; see ``kinetoscope.models.profile``."""
    from kinetoscope.models.profile import profile_model

    return profile_model(name_or_model, input_shape=input_shape, **kwargs)


__all__ = ["create_model", "list_models", "model_info", "model_options", "register_model"]
