"""Generated and derived datasets (docs/architecture.md): Temporal Shapes (Broomé 2022 §5.1) and,
from its own module, appearance-free videos.

Generators write the same ``DatasetStore`` format as ``data prepare``.
"""

from __future__ import annotations

from kinetoscope.synth.appearance_free import appearance_free, make_appearance_free_dataset
from kinetoscope.synth.temporal_shapes import (
    CLASSES,
    DOMAINS,
    generate_temporal_shapes,
    temporal_shapes,
)

__all__ = [
    "CLASSES",
    "DOMAINS",
    "appearance_free",
    "generate_temporal_shapes",
    "make_appearance_free_dataset",
    "temporal_shapes",
]
