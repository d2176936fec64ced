"""Optical flow: OpenCV Farnebäck / Dual TV-L1 / DIS, encodings, per-frame caching, visualisation.

Broomé 2022 §3.2 (Farnebäck at 16 fps matched to 2 fps RGB, magnitude channel, min-max images),
Feichtenhofer 2017 Ch. 3 (TV-L1, ±20 px uint8 quantisation, stacks of L = 10 fields), Ilic 2024 (flow for
appearance-free videos). See docs/flow.md.
"""

from kinetoscope.flow.cache import FlowSpec, video_flow
from kinetoscope.flow.compute import (
    compute_flow,
    flow_at_frames,
    flow_estimator,
    flow_pairs,
    match_times,
    to_gray,
)
from kinetoscope.flow.encode import (
    centred,
    decode,
    from_float16,
    jpeg_clip,
    minmax_uint8,
    stack,
    stack_window,
    to_float16,
    unit_range,
    with_magnitude,
)
from kinetoscope.flow.synthetic import (
    Layer,
    SyntheticMotion,
    deformation_motion,
    endpoint_error,
    layered_motion,
    smooth_texture,
    synthetic_motion,
)
from kinetoscope.flow.visualise import colour_wheel, flow_to_rgb

__all__ = [
    "FlowSpec",
    "Layer",
    "SyntheticMotion",
    "centred",
    "colour_wheel",
    "compute_flow",
    "decode",
    "deformation_motion",
    "endpoint_error",
    "flow_at_frames",
    "flow_estimator",
    "flow_pairs",
    "flow_to_rgb",
    "from_float16",
    "jpeg_clip",
    "layered_motion",
    "match_times",
    "minmax_uint8",
    "smooth_texture",
    "stack",
    "stack_window",
    "synthetic_motion",
    "to_float16",
    "to_gray",
    "unit_range",
    "video_flow",
    "with_magnitude",
]
