"""Generated and derived datasets (DESIGN.md "synth/"): Temporal Shapes (seed 000 [T] §5.1) and,
from its own module, appearance-free videos.

Generators write the same ``DatasetStore`` format as ``data prepare``.
"""

from __future__ import annotations

from typing import Any

from kinetoscope.synth.temporal_shapes import (
    CLASSES,
    DOMAINS,
    generate_temporal_shapes,
    temporal_shapes,
)

__all__ = ["CLASSES", "DOMAINS", "appearance_free", "generate_temporal_shapes", "temporal_shapes"]


def __getattr__(name: str) -> Any:
    # appearance_free lives in its own module (another engineer's); import it on first use so this
    # package imports even before that module exists.
    if name == "appearance_free":
        from kinetoscope.synth.appearance_free import appearance_free

        return appearance_free
    raise AttributeError(f"module 'kinetoscope.synth' has no attribute {name!r}")
