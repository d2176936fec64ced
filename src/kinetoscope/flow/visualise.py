"""Colour-wheel pictures of optical flow for reports.

HSV coding (the usual Middlebury-style view; Ilic 2024's code normalises by the video's maximum
magnitude, see docs/deviations.md, 'Flow-stream encoding of the appearance-free models'; Feichtenhofer 2017
Ch. 6 displays flow as HSV among others): hue =
direction of ``(u, v)``, saturation = 1, value = magnitude / ``max_magnitude`` (clipped to 1). Still
pixels are black. Direction convention (image coordinates, y down): right = red (hue 0°), down =
hue 90° (yellow-green), left = cyan (180°), up = hue 270° (violet).
"""

from __future__ import annotations

import cv2
import numpy as np


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """``float [..., H, W, 2|3]`` (u, v[, magnitude]) -> ``uint8 [..., H, W, 3]`` RGB colour-wheel images.

    ``max_magnitude``: the magnitude shown at full brightness; ``None`` uses the largest magnitude in
    ``flow`` (so a whole sequence shares one scale when passed at once)."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim < 3 or flow.shape[-1] not in (2, 3):
        raise ValueError(f"flow_to_rgb needs flow [..., H, W, 2|3], got {flow.shape}")
    u, v = flow[..., 0], flow[..., 1]
    magnitude = np.sqrt(u**2 + v**2)
    if max_magnitude is None:
        max_magnitude = float(magnitude.max()) if magnitude.size else 0.0
    if max_magnitude < 0:
        raise ValueError(f"max_magnitude must be >= 0, got {max_magnitude}")
    angle = np.mod(np.degrees(np.arctan2(v, u)), 360.0)  # 0 = right, 90 = down (y points down)
    hsv = np.empty((*u.shape, 3), dtype=np.uint8)
    hsv[..., 0] = np.rint(angle / 2.0).astype(np.int32) % 180  # OpenCV 8-bit hue is 0..179
    hsv[..., 1] = 255
    value = magnitude / max_magnitude if max_magnitude > 0 else np.zeros_like(magnitude)
    hsv[..., 2] = np.clip(np.rint(value * 255.0), 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(hsv.reshape(-1, u.shape[-1], 3), cv2.COLOR_HSV2RGB)  # leading dims folded into rows
    return rgb.reshape(hsv.shape)


def colour_wheel(size: int = 65) -> np.ndarray:
    """A ``uint8 [size, size, 3]`` legend: the colour of every direction, brightness rising outwards."""
    if size < 3:
        raise ValueError(f"size must be >= 3, got {size}")
    centre = (size - 1) / 2.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.stack([x - centre, y - centre], axis=-1)
    radius = np.sqrt(field[..., 0] ** 2 + field[..., 1] ** 2)
    field[radius > centre] = 0.0
    return flow_to_rgb(field, max_magnitude=centre)
