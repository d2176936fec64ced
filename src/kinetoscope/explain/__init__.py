"""Explanations: which frames and which regions a video model used (docs/explain.md).

Temporal masks and Grad-CAM for video (Mänttäri 2020 §3),
blob / mask statistics with Welch's t-test, rendering (GIF, PNG contact sheets) and ``explain_run``
for a run directory. Every method is an entry of ``kinetoscope.registry.EXPLAINERS``.
"""

from __future__ import annotations

from kinetoscope.explain.base import Explanation
from kinetoscope.explain.gradcam import gradcam
from kinetoscope.explain.temporal_mask import (
    TemporalMaskResult,
    apply_freeze,
    apply_reverse,
    temporal_mask,
    temporal_mask_reference,
)

__all__ = [
    "Explanation",
    "TemporalMaskResult",
    "apply_freeze",
    "apply_reverse",
    "explain_run",
    "explanations_section",
    "gradcam",
    "temporal_mask",
    "temporal_mask_reference",
]


def __getattr__(name: str):
    if name in ("explain_run", "explanations_section"):
        from kinetoscope.explain import run

        return getattr(run, name)
    raise AttributeError(f"module 'kinetoscope.explain' has no attribute {name!r}")
