"""Annotated prediction videos: the video with its top classes and a score timeline drawn over it.

``predict --render`` writes one MP4 per video (PyAV, MPEG-4): every source frame (scaled so its
longer side is at most ``max_side``) carries, top left, the top classes of the clip window that
covers that moment with their scores as bars, and, along the bottom, the score of one class over the
whole video — one step per clip window, red where it is at least 0.5 — with a white cursor at the
current time. What a clinician scrubs through to see which seconds drove a verdict (Broomé 2022
§3.3: per-clip predictions over long videos).

Frames are decoded and encoded one at a time, so long videos do not sit in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from kinetoscope.utils import atomic_path

STRIP_HEIGHT = 48


def _source_frames(path: Path, max_side: int) -> tuple[Iterator[tuple[float, np.ndarray]], float]:
    """``(time s, uint8 [H, W, 3])`` of every frame of a video file or frame folder, and its frame rate."""
    import av

    from kinetoscope.data.video import decode_video

    def scaled(image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        s = min(1.0, max_side / max(h, w))
        size = (max(2, int(round(w * s / 2)) * 2), max(2, int(round(h * s / 2)) * 2))  # even for yuv420p
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA) if size != (w, h) else image

    if path.is_dir():
        decoded = decode_video(path)
        return ((float(t), scaled(f)) for t, f in zip(decoded.timestamps, decoded.frames, strict=True)), float(
            decoded.info.fps or 25.0)
    container = av.open(str(path))
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 25.0)

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        with container:
            start = None
            for k, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else k / rate
                start = t if start is None else start
                yield t - start, scaled(frame.to_ndarray(format="rgb24"))

    return frames(), rate


def _timeline(width: int, windows: np.ndarray, focus: np.ndarray, duration: float) -> np.ndarray:
    """The static score strip uint8 ``[STRIP_HEIGHT, width, 3]``: one step per window, 0.5 line."""
    strip = np.full((STRIP_HEIGHT, width, 3), 20, dtype=np.uint8)
    scale = (width - 1) / max(duration, 1e-6)
    usable = STRIP_HEIGHT - 6
    for (start, end), value in zip(windows, focus, strict=True):
        a, b = int(start * scale), max(int(start * scale) + 1, int(end * scale))
        top = 3 + int(round((1 - float(value)) * usable))
        strip[top:STRIP_HEIGHT - 3, a:b] = (200, 60, 60) if value >= 0.5 else (70, 110, 190)
    strip[3 + usable // 2, :, :] = 140  # the 0.5 line
    return strip


def render_prediction_video(
    source: str | Path,
    path: str | Path,
    windows: Sequence[tuple[float, float]],
    scores: np.ndarray,
    classes: Sequence[str],
    focus: str,
    *,
    top: int = 3,
    max_side: int = 480,
) -> Path:
    """Write the annotated MP4 of ``source`` to ``path`` (module docstring). ``windows`` are the clip
    windows' ``(start s, end s)``, ``scores [N, K]`` their class probabilities, ``focus`` the class the
    timeline shows. Returns ``path``."""
    import av
    from PIL import Image, ImageDraw

    source, path = Path(source), Path(path)
    windows_arr = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    scores = np.asarray(scores, dtype=np.float64)
    if len(windows_arr) != len(scores) or not len(scores):
        raise ValueError(f"{len(windows_arr)} windows for {len(scores)} score rows; need one per window")
    focus_index = list(classes).index(focus)
    centres = windows_arr.mean(1)
    duration = float(windows_arr[:, 1].max())
    frames, rate = _source_frames(source, max_side)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip = None
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=Fraction(rate).limit_denominator(1001))
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "3"}
        for t, image in frames:
            h, w = image.shape[:2]
            if strip is None:
                stream.height, stream.width = h + STRIP_HEIGHT, w
                strip = _timeline(w, windows_arr, scores[:, focus_index], max(duration, t))
            canvas = np.concatenate([image, strip], axis=0)
            cursor = min(w - 1, int(t * (w - 1) / max(duration, 1e-6)))
            canvas[h:, cursor] = 255
            current = scores[int(np.argmin(np.abs(centres - t)))]
            picture = Image.fromarray(canvas)
            draw = ImageDraw.Draw(picture)
            order = np.argsort(-current)[:top]
            box_w = min(w - 4, 150)
            draw.rectangle((2, 2, 2 + box_w, 4 + 12 * (len(order) + 1)), fill=(0, 0, 0))
            draw.text((5, 3), f"{t:6.1f} s", fill=(255, 255, 255))
            for row, k in enumerate(order, 1):
                y = 3 + 12 * row
                bar = int((box_w - 6) * float(current[k]))
                draw.rectangle((4, y + 1, 4 + bar, y + 10), fill=(60, 90, 160))
                draw.text((6, y), f"{classes[k]} {current[k]:.2f}", fill=(255, 255, 255))
            draw.text((3, h + 2), f"P({focus})", fill=(255, 255, 255))
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")):
                container.mux(packet)
        if strip is None:
            raise ValueError(f"{source}: no frames to render")
        for packet in stream.encode():
            container.mux(packet)
    return path


__all__ = ["render_prediction_video"]
