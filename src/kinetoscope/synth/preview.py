"""Animated GIF previews of generated clips, for eyeballing a dataset (written with Pillow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kinetoscope.utils import atomic_path


def write_gif(path: str | Path, frames: np.ndarray, fps: float = 10, scale: int = 1) -> Path:
    """Write ``frames`` as a looping GIF at ``fps`` frames per second; returns the path.

    ``frames``: uint8 ``[T, H, W]``, ``[T, H, W, 1]`` (grayscale) or ``[T, H, W, 3]`` (RGB).
    ``scale``: integer nearest-neighbour enlargement (small synthetic frames are hard to see).
    The write is atomic (temp file + rename).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise ValueError(f"GIF frames must be uint8, got {frames.dtype}")
    if frames.ndim == 4 and frames.shape[-1] == 1:
        frames = frames[..., 0]
    if not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[-1] == 3)) or frames.shape[0] == 0:
        raise ValueError(f"GIF frames must be [T,H,W], [T,H,W,1] or [T,H,W,3] with T >= 1, got {frames.shape}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if scale > 1:
        frames = frames.repeat(int(scale), axis=1).repeat(int(scale), axis=2)
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=max(1, round(1000 / fps)),
            loop=0,
        )
    return path
