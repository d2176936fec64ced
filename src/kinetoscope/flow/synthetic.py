"""Sequences with known motion for checking flow accuracy (the flow accuracy check of
``benchmarks/flow.py``).

A smooth random texture (band-limited noise, several Gaussian scales) is moved by a constant affine
motion per frame ``x -> M x`` about the frame centre: translation ``x + d``, rotation by ``angle``
degrees, zoom by ``scale``. Frame ``t`` is rendered directly from a larger base texture through the
cumulative motion ``M^t`` with ``cv2.remap`` (no repeated resampling), so the true flow of every pair
is exactly ``F(x) = M x - x`` in frame ``t``'s coordinates. Scores: the endpoint error (EPE), the mean
Euclidean distance between estimated and true vectors, on the interior (a margin excluded, where
content enters or leaves the frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

MOTIONS = ("translation", "rotation", "zoom")


@dataclass
class SyntheticMotion:
    """``frames`` uint8 ``[T, H, W, 3]``; ``flow`` float32 ``[T-1, H, W, 2]``, the true flow t -> t+1;
    ``regions``: named bool masks ``[T-1, H, W]`` of frame t's pixels (:func:`layered_motion`:
    ``inside``, ``boundary``, ``occluded``; empty for a single global motion)."""

    kind: str
    frames: np.ndarray
    flow: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)


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


def endpoint_error(estimate: np.ndarray, truth: np.ndarray, margin: int = 0, mask: np.ndarray | None = None) -> float:
    """Mean endpoint error ``mean ||F_est - F_true||`` over ``[..., H, W, 2]``, excluding ``margin``
    pixels at each border; with ``mask`` (bool ``[..., H, W]``) only over the pixels it marks (NaN if
    none is left)."""
    estimate = np.asarray(estimate, dtype=np.float32)[..., :2]
    truth = np.asarray(truth, dtype=np.float32)[..., :2]
    if estimate.shape != truth.shape:
        raise ValueError(f"estimate {estimate.shape} and truth {truth.shape} differ in shape")
    error = np.sqrt(((estimate - truth) ** 2).sum(axis=-1))
    keep = np.ones(error.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask, bool), error.shape)
    if margin:
        h, w = truth.shape[-3:-1]
        if 2 * margin >= min(h, w):
            raise ValueError(f"margin {margin} leaves no interior in a {h}x{w} field")
        keep = keep[..., margin:-margin, margin:-margin]
        error = error[..., margin:-margin, margin:-margin]
    return float(error[keep].mean()) if keep.any() else float("nan")


@dataclass(frozen=True)
class Layer:
    """One layer of :func:`layered_motion`: an ellipse (semi-axes ``axes`` px, tilted ``tilt`` degrees,
    centred at ``centre`` (x, y) in frame 0; ``None`` = the whole frame, the background) moving per frame
    by ``x -> R(angle) S(scale) (x - c) + c + shift``, ``c`` its current centre."""

    shift: tuple[float, float]
    angle: float = 0.0
    scale: float = 1.0
    centre: tuple[float, float] | None = None
    axes: tuple[float, float] = (0.0, 0.0)
    tilt: float = 0.0


DEFAULT_LAYERS = (
    Layer(shift=(1.5, 0.5), angle=0.5),  # background: slow pan with a slight roll
    Layer(shift=(4.0, -2.0), centre=(0.32, 0.36), axes=(0.20, 0.13), tilt=20.0),
    Layer(shift=(-3.0, 2.5), angle=3.0, centre=(0.62, 0.58), axes=(0.17, 0.22), tilt=-35.0),
    Layer(shift=(1.0, 3.0), scale=1.04, centre=(0.45, 0.70), axes=(0.14, 0.09), tilt=60.0),
)


def _layer_step(layer: Layer, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The layer's per-frame motion (3x3) and its inverse, with centres given as fractions of the frame."""
    height, width = size
    centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    if layer.centre is not None:
        centre = np.array([layer.centre[0] * width, layer.centre[1] * height])
    a = np.radians(layer.angle)
    linear = layer.scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    step = np.eye(3)
    step[:2, :2] = linear
    step[:2, 2] = centre - linear @ centre + np.asarray(layer.shift)
    return step, np.linalg.inv(step)


def _inside_ellipse(layer: Layer, size: tuple[int, int], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Whether frame-0 positions ``(x, y)`` lie in the layer's ellipse (always, for the background)."""
    if layer.centre is None:
        return np.ones(x.shape, dtype=bool)
    height, width = size
    t = np.radians(layer.tilt)
    dx, dy = x - layer.centre[0] * width, y - layer.centre[1] * height
    u, v = np.cos(t) * dx + np.sin(t) * dy, -np.sin(t) * dx + np.cos(t) * dy
    scale = min(height, width)
    return (u / (layer.axes[0] * scale)) ** 2 + (v / (layer.axes[1] * scale)) ** 2 <= 1.0


def layered_motion(
    num_frames: int = 5,
    size: tuple[int, int] = (128, 128),
    layers: tuple[Layer, ...] = DEFAULT_LAYERS,
    seed: int = 0,
    boundary_width: int = 2,
) -> SyntheticMotion:
    """Independently moving textured layers with occlusion: a background and elliptic objects, each with
    its own texture (:func:`smooth_texture`) and affine motion (:class:`Layer`), stacked in order (later
    layers in front). Every frame is rendered directly from the layers' textures through their cumulative
    motions, and the ellipses are tested analytically, so the true flow is exact: at a pixel of frame
    ``t`` it is the motion of the layer visible there.

    ``regions`` (bool ``[T-1, H, W]``): ``boundary`` = within ``boundary_width`` px of a change of
    visible layer in frame t (motion boundaries); ``occluded`` = the pixel's content is hidden (or leaves
    the frame) in frame t + 1; ``inside`` = neither."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    steps = [_layer_step(layer, size) for layer in layers]

    def source(i: int, t: int, pts: np.ndarray = points) -> np.ndarray:  # frame-0 position of layer i
        return np.linalg.matrix_power(steps[i][1], t) @ pts

    def visible(t: int, pts: np.ndarray = points) -> np.ndarray:  # index of the front-most layer
        label = np.zeros(pts.shape[1], dtype=np.int64)
        for i, layer in enumerate(layers):
            src = source(i, t, pts)
            label[_inside_ellipse(layer, size, src[0], src[1])] = i
        return label

    reach = max(float(np.abs(source(i, t) - points).max()) for i in range(len(layers)) for t in range(num_frames))
    margin = int(np.ceil(reach)) + 8
    textures = [smooth_texture(height + 2 * margin, width + 2 * margin, seed=seed * 101 + i)
                for i in range(len(layers))]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    labels = []
    for t in range(num_frames):
        label = visible(t)
        labels.append(label.reshape(height, width))
        image = np.empty(height * width, dtype=np.float32)
        for i in range(len(layers)):
            src = source(i, t)
            sampled = cv2.remap(textures[i], (src[0] + margin).reshape(height, width).astype(np.float32),
                                (src[1] + margin).reshape(height, width).astype(np.float32),
                                interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT).ravel()
            image[label == i] = sampled[label == i]
        frames[t] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8).reshape(height, width, 1)
    flow = np.empty((num_frames - 1, height, width, 2), dtype=np.float32)
    regions = {name: np.zeros((num_frames - 1, height, width), dtype=bool) for name in ("inside", "boundary",
                                                                                      "occluded")}
    kernel = np.ones((2 * boundary_width + 1,) * 2, np.uint8)
    for t in range(num_frames - 1):
        label = labels[t].ravel()
        moved = np.empty_like(points)
        for i in range(len(layers)):
            moved[:, label == i] = (steps[i][0] @ points[:, label == i])
        flow[t] = np.stack([moved[0] - points[0], moved[1] - points[1]], axis=-1).reshape(height, width, 2)
        lost = (visible(t + 1, moved) != label) | (moved[0] < 0) | (moved[0] > width - 1) | (moved[1] < 0)
        lost |= moved[1] > height - 1
        as_image = labels[t].astype(np.uint8)
        edge = cv2.dilate(as_image, kernel) != cv2.erode(as_image, kernel)
        regions["occluded"][t] = lost.reshape(height, width)
        regions["boundary"][t] = edge
        regions["inside"][t] = ~edge & ~regions["occluded"][t]
    return SyntheticMotion(kind="layers", frames=frames, flow=flow, regions=regions)


def _smooth_field(height: int, width: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``float64 [H, W, 2]`` Gaussian-smoothed noise scaled to a maximum magnitude of 1."""
    field_ = np.stack([cv2.GaussianBlur(rng.standard_normal((height, width)), (0, 0), sigmaX=sigma,
                                        borderType=cv2.BORDER_REFLECT) for _ in range(2)], axis=-1)
    return field_ / np.sqrt((field_ ** 2).sum(-1)).max()


def _bilinear(field_: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``field_`` sampled at ``(x, y)`` in float64 (SciPy; ``cv2.remap`` rounds positions to 1/32 px)."""
    from scipy.ndimage import map_coordinates

    return np.stack([map_coordinates(field_[..., c], [y, x], order=1, mode="nearest") for c in range(2)], axis=-1)


def deformation_motion(
    num_frames: int = 5,
    size: tuple[int, int] = (128, 128),
    amplitude: float = 6.0,
    smoothness: float = 20.0,
    speed: float = 0.6,
    drift: tuple[float, float] = (1.0, -0.5),
    seed: int = 0,
) -> SyntheticMotion:
    """A texture under a smooth random non-rigid deformation. Frame ``t`` shows the base texture at
    ``psi_t(y) = y + D_t(y)``, ``D_t = amplitude (cos(speed t) G1 + sin(speed t) G2) - t drift`` with
    ``G1``, ``G2`` smooth random fields (Gaussian-smoothed noise, scale ``smoothness`` px, maximum
    magnitude 1). The true flow of pixel ``x`` of frame ``t`` is ``y - x`` with ``psi_{t+1}(y) =
    psi_t(x)``, solved by fixed-point iteration ``y <- x + D_t(x) - D_{t+1}(y)`` (a contraction: the
    fields' gradients stay well below 1); the residual is below 1e-3 px."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2, got {num_frames}")
    height, width = size
    rng = np.random.default_rng(seed)
    g1, g2 = _smooth_field(height, width, smoothness, rng), _smooth_field(height, width, smoothness, rng)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    grid = np.stack([xs, ys], axis=-1)

    def deformation(t: int) -> np.ndarray:
        return amplitude * (np.cos(speed * t) * g1 + np.sin(speed * t) * g2) - t * np.asarray(drift)

    margin = int(np.ceil(amplitude + num_frames * np.abs(drift).max())) + 8
    base = smooth_texture(height + 2 * margin, width + 2 * margin, seed=seed)
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        where = (grid + deformation(t) + margin).astype(np.float32)
        image = cv2.remap(base, where[..., 0], where[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames[t] = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)[..., None]
    flow = np.empty((num_frames - 1, height, width, 2), dtype=np.float32)
    for t in range(num_frames - 1):
        target = grid + deformation(t)  # psi_t(x)
        moving = amplitude * (np.cos(speed * (t + 1)) * g1 + np.sin(speed * (t + 1)) * g2)
        y = target - deformation(t + 1)
        for _ in range(60):
            y = target + (t + 1) * np.asarray(drift) - _bilinear(moving, y[..., 0], y[..., 1])
        residual = y + _bilinear(moving, y[..., 0], y[..., 1]) - (t + 1) * np.asarray(drift) - target
        if np.abs(residual).max() > 1e-3:
            raise ValueError(f"deformation too strong for an exact flow (residual {np.abs(residual).max():.2g} px); "
                             "lower amplitude or raise smoothness")
        flow[t] = (y - grid).astype(np.float32)
    return SyntheticMotion(kind="deformation", frames=frames, flow=flow)
