"""Rendering explanations: the three-panel animation of Mänttäri 2020 Fig. 2 and PNG contact sheets.

Per clip an animated GIF (Pillow; or an MP4 with PyAV, ``render_mp4``) with the panels *original*,
*heat-map overlay* (Grad-CAM, jet colour map blended over the frame) and *freeze-perturbed* (the
clip under its temporal mask), above a mask timeline strip: one cell per frame, red where the mask
is on, green where it is off (the soft value as brightness), the current frame outlined. A contact
sheet shows the same rows with every frame side by side, for reports. Panels that a method did not
produce are left out.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kinetoscope.utils import atomic_write_bytes

CELL_HEIGHT = 12


def display_frames(clip: np.ndarray) -> np.ndarray:
    """A clip ``[C, T, H, W]`` in [0, 1] -> uint8 ``[T, H, W, 3]`` (1 channel: grey; 3: RGB; other
    counts, e.g. flow: the first channel min-max scaled)."""
    clip = np.asarray(clip, dtype=np.float32)
    if clip.ndim != 4:
        raise ValueError(f"clip must be [C, T, H, W]; got shape {clip.shape}")
    if clip.shape[0] == 3:
        rgb = clip.transpose(1, 2, 3, 0)
    else:
        channel = clip[0]
        if clip.shape[0] != 1:
            low, high = channel.min(), channel.max()
            channel = (channel - low) / (high - low) if high > low else np.zeros_like(channel)
        rgb = np.repeat(channel[..., None], 3, axis=-1)
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def overlay_heatmap(frames: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Jet-coloured heat-maps ``[T, H, W]`` in [0, 1] blended over frames uint8 ``[T, H, W, 3]``."""
    import cv2

    out = np.empty_like(frames)
    for t, (frame, heat) in enumerate(zip(frames, heatmaps, strict=True)):
        coloured = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
        coloured = cv2.cvtColor(coloured, cv2.COLOR_BGR2RGB)
        out[t] = (alpha * coloured + (1 - alpha) * frame).round().astype(np.uint8)
    return out


def mask_strip(mask: np.ndarray, width: int, current: int | None = None, threshold: float = 0.5,
               height: int = CELL_HEIGHT) -> np.ndarray:
    """The mask timeline uint8 ``[height, width, 3]``: red cells on, green off, brightness = soft value
    (on) or 1 - value (off); ``current`` outlined in white."""
    mask = np.asarray(mask, dtype=np.float32)
    strip = np.zeros((height, width, 3), dtype=np.uint8)
    edges = np.linspace(0, width, len(mask) + 1).round().astype(int)
    for t, value in enumerate(mask):
        on = value > threshold
        level = 0.45 + 0.55 * (value if on else 1 - value)
        colour = (int(220 * level), 30, 30) if on else (30, int(180 * level), 60)
        strip[:, edges[t]:edges[t + 1]] = colour
        strip[:, edges[t]] = 0
    if current is not None:
        a, b = edges[current], max(edges[current + 1] - 1, edges[current])
        strip[0, a:b + 1] = strip[-1, a:b + 1] = 255
        strip[:, a] = strip[:, b] = 255
    return strip


def _upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    return frames.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else frames


def _label(image, text: str, xy: tuple[int, int]) -> None:
    from PIL import ImageDraw

    ImageDraw.Draw(image).text(xy, text, fill=(255, 255, 255))


def _scale_for(height: int) -> int:
    return max(1, 128 // max(height, 1))


def panel_frames(panels: Sequence[tuple[str, np.ndarray]], mask: np.ndarray | None = None, caption: str = ""
                 ) -> list:
    """One ``PIL.Image`` per frame: ``panels`` ``[(title, uint8 [T, H, W, 3]), ...]`` side by side (scaled
    up to about 128 px), the mask strip below (if ``mask [T]`` is given) and a caption line."""
    from PIL import Image

    if not panels:
        raise ValueError("render: no panels to draw")
    frames_count, height, width = panels[0][1].shape[:3]
    scale = _scale_for(height)
    h, w = height * scale, width * scale
    gap, title_h = 4, 14
    total_w = len(panels) * w + (len(panels) - 1) * gap
    strip_h = CELL_HEIGHT + gap if mask is not None else 0
    caption_h = 14 if caption else 0
    images = []
    scaled = [(title, _upscale(p, scale)) for title, p in panels]
    for t in range(frames_count):
        canvas = np.full((title_h + h + strip_h + caption_h, total_w, 3), 24, dtype=np.uint8)
        for i, (_, frames) in enumerate(scaled):
            canvas[title_h:title_h + h, i * (w + gap):i * (w + gap) + w] = frames[t]
        if mask is not None:
            canvas[title_h + h + gap:title_h + h + strip_h] = mask_strip(mask, total_w, current=t)
        image = Image.fromarray(canvas)
        for i, (title, _) in enumerate(scaled):
            _label(image, title, (i * (w + gap) + 2, 1))
        if caption:
            _label(image, caption, (2, title_h + h + strip_h))
        images.append(image)
    return images


def render_gif(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], mask: np.ndarray | None = None,
               caption: str = "", fps: float = 4.0) -> Path:
    """Write an animated GIF of :func:`panel_frames`. Returns ``path``."""
    from PIL import Image

    images = [im.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
              for im in panel_frames(panels, mask, caption)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(round(1000 / fps)), loop=0, disposal=1)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def render_mp4(path: str | Path, panels: Sequence[tuple[str, np.ndarray]], mask: np.ndarray | None = None,
               caption: str = "", fps: float = 4.0) -> Path:
    """Write the same animation as :func:`render_gif` as an MP4 (PyAV, MPEG-4; padded to even sizes).
    Returns ``path``."""
    from kinetoscope.data.video import write_video
    from kinetoscope.utils import atomic_path

    frames = np.stack([np.asarray(im) for im in panel_frames(panels, mask, caption)])
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2  # yuv420p needs even sides
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), constant_values=24)
    with atomic_path(path) as tmp:
        mp4 = tmp.with_suffix(".mp4")  # PyAV picks the container by the extension
        try:
            write_video(mp4, frames, fps=fps)
            mp4.replace(tmp)
        finally:
            mp4.unlink(missing_ok=True)
    return Path(path)


def contact_sheet(path: str | Path, rows: Sequence[tuple[str, np.ndarray]], mask: np.ndarray | None = None,
                  caption: str = "") -> Path:
    """Write a PNG: one row per ``(title, uint8 [T, H, W, 3])`` with every frame side by side, the mask
    strip under them (one cell per frame column). Returns ``path``."""
    from PIL import Image

    if not rows:
        raise ValueError("contact_sheet: no rows to draw")
    frames_count, height, width = rows[0][1].shape[:3]
    scale = max(1, 64 // max(height, 1))
    h, w = height * scale, width * scale
    gap, label_w, caption_h = 2, 90, 14 if caption else 0
    total_w = label_w + frames_count * (w + gap)
    strip_h = CELL_HEIGHT + gap if mask is not None else 0
    canvas = np.full((caption_h + len(rows) * (h + gap) + strip_h, total_w, 3), 255, dtype=np.uint8)
    for r, (_, frames) in enumerate(rows):
        top = caption_h + r * (h + gap)
        big = _upscale(frames, scale)
        for t in range(frames_count):
            left = label_w + t * (w + gap)
            canvas[top:top + h, left:left + w] = big[t]
    if mask is not None:
        top = caption_h + len(rows) * (h + gap)
        canvas[top:top + CELL_HEIGHT, label_w:total_w] = mask_strip(mask, total_w - label_w)
    image = Image.fromarray(canvas)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    for r, (title, _) in enumerate(rows):
        draw.text((2, caption_h + r * (h + gap) + h // 2 - 5), title, fill=(0, 0, 0))
    if mask is not None:
        draw.text((2, caption_h + len(rows) * (h + gap)), "mask", fill=(0, 0, 0))
    if caption:
        draw.text((2, 1), caption, fill=(0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)
