"""Sequences with known motion for checking flow accuracy (issue 6, "flow accuracy check").

A smooth random texture (band-limited noise, several Gaussian scales) is moved by a constant affine
motion per frame ``x -> M x`` about the frame centre: translation ``x + d``, rotation by ``angle``
degrees, zoom by ``scale``. Frame ``t`` is rendered directly from a larger base texture through the
cumulative motion ``M^t`` with ``cv2.remap`` (no repeated resampling), so the true flow of every pair
is exactly ``F(x) = M x - x`` in frame ``t``'s coordinates. Scores: the endpoint error (EPE), the mean
Euclidean distance between estimated and true vectors, on the interior (a margin excluded, where
content enters or leaves the frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MOTIONS = ("translation", "rotation", "zoom")


@dataclass
class SyntheticMotion:
    """``frames`` uint8 ``[T, H, W, 3]``; ``flow`` float32 ``[T-1, H, W, 2]``, the true flow t -> t+1."""

    kind: str
    frames: np.ndarray
    flow: np.ndarray


def smooth_texture(
    height: int, width: int, seed: int = 0, scales: tuple[float, ...] = (1.5, 3.0, 6.0)
) -> np.ndarray:
    """``float32 [H, W]`` in [0, 1]: a sum of Gaussian-blurred white noise at ``scales`` (pixels),
    equal weight per scale after normalising each to unit variance, so every flow method sees texture
    at its own window size."""
    rng = np.random.default_rng(seed)
    texture = np.zeros((height, width), dtype=np.float32)
    for sigma in scales:
        noise = rng.standard_normal((height, width)).astype(np.float32)
        layer = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
        texture += layer / (layer.std() + 1e-8)
    texture -= texture.min()
    return texture / max(float(texture.max()), 1e-8)


def _motion_matrix(
    kind: str, shift: tuple[float, float], angle: float, scale: float, centre: np.ndarray
) -> np.ndarray:
    """3x3 homogeneous matrix of one frame's motion (x, y pixel coordinates)."""
    if kind == "translation":
        return np.array([[1.0, 0.0, shift[0]], [0.0, 1.0, shift[1]], [0.0, 0.0, 1.0]])
    if kind == "rotation":
        a = np.radians(angle)
        linear = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    elif kind == "zoom":
        linear = np.eye(2) * scale
    else:
        raise ValueError(f"motion kind {kind!r} is not one of {', '.join(MOTIONS)}")
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre - linear @ centre
    return matrix


def synthetic_motion(
    kind: str = "translation",
    num_frames: int = 4,
    size: tuple[int, int] = (128, 128),
    shift: tuple[float, float] = (2.5, -1.5),
    angle: float = 2.0,
    scale: float = 1.03,
    seed: int = 0,
) -> SyntheticMotion:
    """A textured sequence moving by a known motion. ``kind``: translation (``shift`` = (dx, dy) px per
    frame) | rotation (``angle`` degrees per frame; positive is clockwise on screen, as y points
    down) | zoom (``scale`` per frame). All about the frame centre."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    height, width = size
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    step = _motion_matrix(kind, shift, angle, scale, centre)
    # the base covers everything any frame can sample: margin grows with the cumulative motion
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    reach = 0.0
    sources = []
    for t in range(num_frames):
        inverse = np.linalg.inv(np.linalg.matrix_power(step, t))
        src = inverse @ points
        sources.append(src)
        reach = max(reach, float(np.abs(src[0] - points[0]).max()), float(np.abs(src[1] - points[1]).max()))
    margin = int(np.ceil(reach)) + 8
    base = smooth_texture(height + 2 * margin, width + 2 * margin, seed=seed)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t, src in enumerate(sources):
        map_x = (src[0] + margin).reshape(height, width).astype(np.float32)
        map_y = (src[1] + margin).reshape(height, width).astype(np.float32)
        image = cv2.remap(base, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        grey = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
        frames[t] = grey[..., None]
    moved = step @ points
    true = np.stack([moved[0] - points[0], moved[1] - points[1]], axis=-1).reshape(height, width, 2)
    flow = np.broadcast_to(true.astype(np.float32), (num_frames - 1, height, width, 2)).copy()
    return SyntheticMotion(kind=kind, frames=frames, flow=flow)


def endpoint_error(estimate: np.ndarray, truth: np.ndarray, margin: int = 0) -> float:
    """Mean endpoint error ``mean ||F_est - F_true||`` over ``[..., H, W, 2]``, excluding ``margin``
    pixels at each border."""
    estimate = np.asarray(estimate, dtype=np.float32)[..., :2]
    truth = np.asarray(truth, dtype=np.float32)[..., :2]
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} differ in shape")
    if margin:
        h, w = truth.shape[-3:-1]
        if 2 * margin >= min(h, w):
            raise ValueError(f"margin {margin} leaves no interior in a {h}x{w} field")
        estimate = estimate[..., margin:-margin, margin:-margin, :]
        truth = truth[..., margin:-margin, margin:-margin, :]
    return float(np.sqrt(((estimate - truth) ** 2).sum(axis=-1)).mean())
