"""Synthetic KTH-style actors: who (subject) and what (action) on separate channels of the video.

For privacy–utility experiments at CPU scale (Ilic 2024 §5.4 uses KTH: 25 actors × 6 actions, privacy
label = identity). Each subject is a red-toned figure (a torso block and a head) whose surface carries a
subject-specific stripe pattern (orientation and period) — identity is only in the appearance, all
figures have the same shape and size. Each action is a motion of the whole figure: ``walk-right``,
``walk-left``, ``jump`` (vertical bounce), ``sway`` (horizontal oscillation) — the action is only in
the motion. The background is a static cyan-toned texture, per video. Colours are chosen so the
figure and the background have opposite colour keys for
:class:`kinetoscope.synth.privacy.ColourKeyExtractor` (figure: R high, G and B low).

Written as a ``DatasetStore`` (the ``data prepare`` format): ``subject`` = ``s00``, ``s01``, ...,
``label`` = the action, and a KTH-like split per (subject, action): the last repetition is ``val``,
the others ``train``, so every subject appears in both splits (needed for identity recognition).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ACTIONS = ("walk-right", "walk-left", "jump", "sway")


def _stripes(height: int, width: int, angle: float, period: float, phase: float) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    return 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * u / period + phase))


def actor_clip(subject: int, action: str, *, frames: int = 16, size: int = 64,
               rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One clip uint8 ``[frames, size, size, 3]`` of ``subject`` doing ``action``, and the figure's
    mask bool ``[frames, size, size]``."""
    import cv2

    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not known; accepted: {', '.join(ACTIONS)}")
    rng = rng or np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    noise = (noise - noise.min()) / max(1e-6, float(noise.max() - noise.min()))
    background = np.stack([20 + 80 * noise, 150 + 85 * noise, 150 + 85 * noise[::-1]], -1)
    body_h, body_w, head = size * 3 // 8, size // 4, size // 8
    angle = np.pi * (subject % 4) / 4
    period = 4.0 + 2.0 * (subject // 4)
    pattern = _stripes(body_h + head, body_w, angle, period, phase=0.0)
    shade = 0.5 + 0.5 * (subject % 3) / 2
    figure = np.stack([150 + 100 * pattern, 20 + 70 * pattern * shade, 20 + 70 * (1 - pattern) * shade], -1)
    mask = np.zeros((body_h + head, body_w), bool)
    mask[head:] = True
    mask[:head, body_w // 2 - head // 2:body_w // 2 + head // 2 + head % 2] = True
    out = np.empty((frames, size, size, 3), np.uint8)
    masks = np.zeros((frames, size, size), bool)
    speed = rng.uniform(1.5, 2.5)
    span = size - body_w
    x0 = rng.uniform(0, span * 0.3) if action == "walk-right" else rng.uniform(span * 0.7, span)
    y_base = size - body_h - head - 4 - rng.integers(0, 6)
    centre = rng.uniform(span * 0.3, span * 0.7)
    phase = rng.uniform(0, 2 * np.pi)
    for t in range(frames):
        x, y = centre, float(y_base)
        if action == "walk-right":
            x = x0 + speed * t
        elif action == "walk-left":
            x = x0 - speed * t
        elif action == "jump":
            y = y_base - abs(np.sin(np.pi * t / 6 + phase)) * size / 6
        elif action == "sway":
            x = centre + np.sin(2 * np.pi * t / 8 + phase) * size / 8
        xi, yi = int(round(np.clip(x, 0, span))), int(round(np.clip(y, 0, size - body_h - head)))
        frame = background.copy()
        region = frame[yi:yi + body_h + head, xi:xi + body_w]
        region[mask] = figure[mask]
        masks[t, yi:yi + body_h + head, xi:xi + body_w] = mask
        out[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return out, masks


def generate_actors(out_root: str | Path, *, subjects: int = 6, actions: tuple[str, ...] = ACTIONS,
                    repeats: int = 3, frames: int = 16, size: int = 64, seed: int = 0,
                    masks_dir: str | Path | None = None) -> Path:
    """Write ``subjects`` × ``len(actions)`` × ``repeats`` clips as a ``DatasetStore``; returns the root.
    With ``masks_dir``, each figure's masks go to ``<masks_dir>/<video_id>.npy`` (for the mask baseline)."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord
    from kinetoscope.utils import atomic_save_npy

    if repeats < 2:
        raise ValueError("repeats must be >= 2 so every subject and action is in both train and val")
    store = DatasetStore(out_root)
    records = []
    for s in range(subjects):
        for action in actions:
            for r in range(repeats):
                rng = np.random.default_rng([seed, s, ACTIONS.index(action), r])
                vid = f"s{s:02d}_{action}_{r}"
                clip, masks = actor_clip(s, action, frames=frames, size=size, rng=rng)
                store.write_frames(vid, clip)
                if masks_dir is not None:
                    atomic_save_npy(Path(masks_dir) / f"{vid}.npy", masks)
                records.append(VideoRecord(video_id=vid, label=action, subject=f"s{s:02d}",
                                           split="val" if r == repeats - 1 else "train", fps=25.0,
                                           num_frames=frames))
    store.write_records(records)
    store.write_meta({"name": "actors", "classes": list(actions), "fps": 25, "size": [size, size], "channels": 3,
                      "frames": frames, "source": "kinetoscope.synth.actors"})
    return store.root


__all__ = ["ACTIONS", "actor_clip", "generate_actors"]
