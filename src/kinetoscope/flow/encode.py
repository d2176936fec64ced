"""Flow encodings: raw float16, clipped-and-quantised uint8, magnitude channel, min-max images, stacks.

* :func:`to_float16` / :func:`from_float16` — the cache format (``flow/<id>.npy``, data/cache.py).
* :func:`jpeg_clip` / :func:`decode` — Feichtenhofer 2017's code: per
  component ``q = clip(round(255 (x + 20) / 40), 0, 255)``, stored as grayscale JPEGs, network input
  ``q - 128`` (:func:`centred`). ``decode`` inverts it up to half a quantisation step (``20/255`` px)
  for ``|x| <= 20``; larger displacements come back as ±20.
* :func:`with_magnitude` — Broomé 2022 §3.2: channels ``(u, v, sqrt(u² + v²))``.
* :func:`minmax_uint8` — Broomé 2022's code: each flow frame min-max scaled to 0–255 (it
  was stored as JPEG); §3.3 then divides by 255 (:func:`unit_range`). Kinetoscope scales each frame
  over all its channels together (one min and max per frame, as ``cv2.normalize(..., NORM_MINMAX)``
  does on a 3-channel image), so the ratio of u, v and magnitude is kept; ``per_channel=True`` scales
  each channel on its own.
* :func:`stack` / :func:`stack_window` — Feichtenhofer 2017 Ch. 3: L = 10 consecutive (u, v) fields stacked into
  2L channels, interleaved ``u1, v1, u2, v2, ...`` (*code*) or grouped ``u1..uL, v1..vL``; the stack of
  centre frame ``t`` covers ``t - L/2 ... t + L/2 - 1``.

Arrays are numpy ``[..., H, W, 2|3]`` (channels last, as cached) unless a function says otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_BOUND = 20.0


def _check_channels(flow: np.ndarray, allowed: tuple[int, ...], name: str) -> None:
    if flow.ndim < 3 or flow.shape[-1] not in allowed:
        raise ValueError(f"{name} needs flow [..., H, W, {'|'.join(map(str, allowed))}], got {flow.shape}")


def to_float16(flow: np.ndarray) -> np.ndarray:
    """Raw ``(u, v[, magnitude])`` as float16 (the cache's storage type; ~0.01 px error below 16 px)."""
    return np.asarray(flow).astype(np.float16)


def from_float16(flow: np.ndarray) -> np.ndarray:
    return np.asarray(flow, dtype=np.float32)


def jpeg_clip(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Clip each component to ``[-bound, bound]`` px and quantise to uint8 (Feichtenhofer 2017's code):
    ``q = clip(round(255 (x + bound) / (2 bound)), 0, 255)``. Same shape, dtype uint8."""
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    flow = np.asarray(flow, dtype=np.float32)
    q = np.rint(255.0 * (flow + bound) / (2.0 * bound))
    return np.clip(q, 0, 255).astype(np.uint8)


def decode(quantised: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Inverse of :func:`jpeg_clip`: ``x = q · 2 bound / 255 - bound`` as float32. Round trip error
    ``<= bound / 255`` for components within ``±bound``."""
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    q = np.asarray(quantised)
    if q.dtype != np.uint8:
        raise ValueError(f"decode expects uint8 values from jpeg_clip, got {q.dtype}")
    return q.astype(np.float32) * (2.0 * bound / 255.0) - bound


def centred(quantised: np.ndarray) -> np.ndarray:
    """Network input of Feichtenhofer 2017's code: ``q - 128`` as float32."""
    return np.asarray(quantised, dtype=np.float32) - 128.0


def with_magnitude(flow: np.ndarray) -> np.ndarray:
    """``[..., 2]`` (u, v) -> ``[..., 3]`` (u, v, sqrt(u² + v²)) (Broomé 2022 §3.2); float32."""
    flow = np.asarray(flow, dtype=np.float32)
    _check_channels(flow, (2,), "with_magnitude")
    magnitude = np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2)
    return np.concatenate([flow, magnitude[..., None]], axis=-1)


def minmax_uint8(flow: np.ndarray, per_channel: bool = False) -> np.ndarray:
    """Scale each flow frame ``[H, W, C]`` of ``[..., H, W, C]`` linearly to 0–255 (Broomé 2022's code).

    One min and max per frame over all channels (default) or per channel; a constant frame maps to 0.
    Returns uint8 of the same shape. Note this discards the absolute speed: a still scene's noise is
    stretched to the full range, which is what Broomé 2022's models saw."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim < 3:
        raise ValueError(f"minmax_uint8 needs flow [..., H, W, C], got {flow.shape}")
    axes: tuple[int, ...] = (-3, -2) if per_channel else (-3, -2, -1)
    low = flow.min(axis=axes, keepdims=True)
    span = flow.max(axis=axes, keepdims=True) - low
    scaled = np.where(span > 0, (flow - low) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(np.rint(scaled * 255.0), 0, 255).astype(np.uint8)


def unit_range(images: np.ndarray) -> np.ndarray:
    """uint8 0–255 -> float32 [0, 1] (Broomé 2022 §3.3: flow "linearly scaled to the 0-1 range")."""
    return np.asarray(images, dtype=np.float32) / 255.0


def stack(flow: Any, layout: str = "interleaved") -> Any:
    """Stacked-flow input of Feichtenhofer 2017 Ch. 3: ``[B, 2, L, H, W]`` -> ``[B, 2L, H, W]``.

    Works on numpy arrays and torch tensors. ``interleaved`` gives ``u1, v1, u2, v2, ...`` (*code*);
    ``grouped`` gives ``u1..uL, v1..vL``."""
    if flow.ndim != 5 or flow.shape[1] != 2:
        raise ValueError(f"stack needs flow [B, 2, L, H, W], got {tuple(flow.shape)}")
    b, _, length, h, w = flow.shape
    if layout == "interleaved":
        return flow.swapaxes(1, 2).reshape(b, 2 * length, h, w)
    if layout == "grouped":
        return flow.reshape(b, 2 * length, h, w)
    raise ValueError(f"layout must be 'interleaved' or 'grouped', got {layout!r}")


def stack_window(flow: np.ndarray, centre: int, length: int = 10, layout: str = "interleaved") -> np.ndarray:
    """The L-field stack of centre frame ``t`` from a cached sequence ``[T, H, W, 2]``: fields
    ``t - L//2 ... t - L//2 + L - 1`` (Feichtenhofer 2017's code: t-5 … t+4 for L = 10), indices clamped to the
    sequence (edge fields repeat). Returns ``[H, W, 2L]`` in the chosen layout."""
    flow = np.asarray(flow)
    _check_channels(flow, (2,), "stack_window")
    if flow.ndim != 4:
        raise ValueError(f"stack_window needs flow [T, H, W, 2], got {flow.shape}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    index = np.clip(np.arange(length) + centre - length // 2, 0, flow.shape[0] - 1)
    window = flow[index]  # [L, H, W, 2]
    stacked = stack(window.transpose(3, 0, 1, 2)[None], layout)  # [1, 2, L, H, W] -> [1, 2L, H, W]
    return np.moveaxis(stacked[0], 0, -1)
