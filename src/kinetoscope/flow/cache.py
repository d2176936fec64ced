"""What ``data prepare --flow`` caches: one flow field per cached RGB frame.

The cache stores ``flow/<id>.npy`` as float16 ``[T, H, W, 2|3]`` beside ``frames/<id>.npy``
``[T, H, W, C]`` (data/cache.py), **aligned one field per frame**, so a clip's frame indices select its
flow too (data/dataset.py). Field ``t`` is the flow of the adjacent pair chosen by
:func:`~kinetoscope.flow.compute.flow_pairs` (default ``forward``: the motion from frame ``t`` to the
next frame of the flow-rate sequence; the last frame reuses the last pair).

Rate (Broomé 2022 §3.2): with ``FlowSpec.fps`` set (16 in Broomé 2022) flow is computed
between adjacent frames of the video decoded at that rate and matched to the RGB frames by timestamp
(:func:`~kinetoscope.flow.compute.match_times`; at 2 fps RGB, frame ``k`` takes the pair ``(8k,
8k+1)`` of the 16 fps video), so it measures 1/16 s of motion however sparse the RGB frames are.
Without it, flow is computed between the cached frames themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kinetoscope.flow.compute import flow_at_frames, match_times
from kinetoscope.flow.encode import with_magnitude
from kinetoscope.registry import FLOW_METHODS


@dataclass
class FlowSpec:
    """How to compute the cached flow: ``method`` (farneback | tvl1 | dis | raft, or ``auto``: RAFT when
    its weights are found, else the measured fallback) and its ``options``; ``fps``
    the rate of the frames flow is computed between (``None``: the cached frames); ``pair`` forward |
    backward; ``magnitude`` adds ``sqrt(u² + v²)`` as a third channel (Broomé 2022)."""

    method: str = "farneback"
    fps: float | None = None
    pair: str = "forward"
    magnitude: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method == "auto":  # recorded as the method it resolves to (RAFT if weights, else the fallback)
            from kinetoscope.flow.compute import resolve_method

            self.method, self.options = resolve_method(self.method, self.options)
        if self.method not in FLOW_METHODS:
            raise KeyError(
                f"unknown flow method {self.method!r}; valid flow methods: {', '.join(FLOW_METHODS.names())}"
            )
        FLOW_METHODS.check_options(self.method, self.options, where=f"flow method {self.method!r}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"flow fps must be positive, got {self.fps}")
        if self.pair not in ("forward", "backward"):
            raise ValueError(f"flow pair must be 'forward' or 'backward', got {self.pair!r}")

    @classmethod
    def parse(cls, value: bool | str | dict[str, Any] | FlowSpec) -> FlowSpec:
        """``True`` -> Farnebäck; ``"dis"`` -> that method; a dict of FlowSpec fields; a FlowSpec."""
        if isinstance(value, FlowSpec):
            return value
        if value is True:
            return cls()
        if isinstance(value, str):
            return cls(method=value)
        if isinstance(value, dict):
            unknown = set(value) - {"method", "fps", "pair", "magnitude", "options"}
            if unknown:
                raise ValueError(
                    f"flow settings have unknown key(s) {sorted(unknown)}; "
                    "accepted: method, fps, pair, magnitude, options"
                )
            return cls(**value)
        raise TypeError(f"flow must be True, a method name, a dict or a FlowSpec, got {value!r}")

    @property
    def channels(self) -> int:
        return 3 if self.magnitude else 2

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def video_flow(
    spec: FlowSpec,
    frames: np.ndarray,
    frame_times: np.ndarray | None = None,
    source_frames: np.ndarray | None = None,
    source_times: np.ndarray | None = None,
) -> np.ndarray:
    """One flow field per cached frame: ``float32 [T, H, W, 2|3]`` for ``frames`` ``uint8 [T, H, W, C]``.

    Without ``source_frames`` flow is computed between the frames themselves. With them (``uint8 [S,
    H, W, C]`` decoded at ``spec.fps``, timestamps ``source_times`` [S] seconds) each frame, at
    ``frame_times [T]``, takes the flow of the source frame on screen at its time and its neighbour.
    A one-frame video (no pair) gets zero flow."""
    frames = np.asarray(frames)
    if source_frames is None:
        source, indices = frames, np.arange(frames.shape[0])
    else:
        if frame_times is None or source_times is None:
            raise ValueError("video_flow with source_frames needs frame_times and source_times")
        if source_frames.shape[1:3] != frames.shape[1:3]:
            raise ValueError(
                f"flow-rate frames are {source_frames.shape[1:3]} but the cached frames are "
                f"{frames.shape[1:3]}; decode both at the same size"
            )
        if len(frame_times) != frames.shape[0] or len(source_times) != source_frames.shape[0]:
            raise ValueError("frame_times / source_times must have one timestamp per frame")
        source, indices = source_frames, match_times(frame_times, source_times)
    if source.shape[0] < 2:
        flow = np.zeros((frames.shape[0], *frames.shape[1:3], 2), dtype=np.float32)
    else:
        flow = flow_at_frames(source, indices, spec.method, pair=spec.pair, **spec.options)
    return with_magnitude(flow) if spec.magnitude else flow
