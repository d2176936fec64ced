"""Moving Objects: videos of several moving, occluding, textured objects with boxes and identities.

A small stand-in for ImageNet VID (Feichtenhofer 2017 §8.5.1) on which Detect & Track trains on a CPU.
Each video shows 1 to ``max_objects`` objects over a smooth noise background. An object's class is
its *shape* (``disc``, ``square``, ``triangle`` by default); its texture (stripes at a random
angle, a checkerboard, or blotchy noise) and colours are drawn at random per object, so texture
carries no class signal. Objects move at constant velocity (1-4 px per frame), bounce off the frame
border, grow or shrink slowly, and are drawn in a fixed depth order, so they pass in front of each
other. The ground truth of an object in a frame is the box of its whole shape with its
``track_id`` and the fraction of it hidden by objects in front (``occluded``); an object hidden by
more than 90 % is not annotated in that frame (ImageNet VID annotates visible objects only).

Output: a kinetoscope detection dataset (:mod:`kinetoscope.data.objects`): ``frames/<id>.npy``
uint8 ``[T, H, W, 3]``, ``objects.csv``, ``annotations.csv``, ``dataset.json`` with
``"task": "detection"``, and preview GIFs with the boxes drawn. Randomness: video ``i`` uses
``SeedSequence(seed, spawn_key=(i,))``, so it is the same whatever ``num`` is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("disc", "square", "triangle")
TEXTURES = ("stripes", "checker", "blotches")
HIDDEN = 0.9  # objects hidden more than this are not annotated


@dataclass
class _Object:
    shape: str
    texture: np.ndarray  # uint8 [S, S, 3], S = 2 * max size: the object's own pattern, moving with it
    centre: np.ndarray  # (x, y) float
    velocity: np.ndarray
    size: float
    growth: float


def _texture(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    colours = rng.integers(30, 256, size=(2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    if kind == "stripes":
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 9)
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period)
    elif kind == "checker":
        cell = int(rng.integers(3, 7))
        mix = ((xx // cell + yy // cell) % 2).astype(np.float32)
    else:
        coarse = rng.random((max(2, side // 6), max(2, side // 6))).astype(np.float32)
        mix = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    return (colours[0] * mix[..., None] + colours[1] * (1 - mix[..., None])).astype(np.uint8)


def _mask(shape: str, size: int) -> np.ndarray:
    """Bool ``[size, size]`` mask of a shape filling its box."""
    mask = np.zeros((size, size), np.uint8)
    if shape == "disc":
        cv2.circle(mask, (size // 2, size // 2), size // 2, 1, -1)
        mask[size // 2, :] = mask[:, size // 2] = 1  # let the box touch all four sides
    elif shape == "square":
        mask[:] = 1
    elif shape == "triangle":
        cv2.fillPoly(mask, [np.array([[size // 2, 0], [size - 1, size - 1], [0, size - 1]], np.int32)], 1)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {CLASSES}")
    return mask.astype(bool)


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    coarse = rng.random((height // 16 + 2, width // 16 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    muted = 0.7 * smooth.mean(-1, keepdims=True) + 0.3 * smooth  # mostly grey, a little colour
    return (50 + 100 * muted).astype(np.uint8)


def moving_objects_video(
    seed: np.random.SeedSequence | int,
    frames: int = 16,
    size: int = 128,
    max_objects: int = 3,
    classes: tuple[str, ...] = CLASSES,
    *,
    min_size: int = 18,
    max_size: int = 40,
) -> tuple[np.ndarray, list[list[tuple[int, str, tuple[int, int, int, int], float]]]]:
    """One video: ``(uint8 [T, size, size, 3], per frame [(track_id, class, (x1, y1, x2, y2), occluded)])``.

    ``max_objects = 0`` gives a video without objects (background only).
    """
    rng = np.random.default_rng(seed)
    background = _background(size, size, rng)
    count = int(rng.integers(1, max_objects + 1)) if max_objects > 0 else 0
    objects = []
    for _ in range(count):
        side = float(rng.uniform(min_size, max_size))
        speed, angle = rng.uniform(1, 4), rng.uniform(-math.pi, math.pi)
        objects.append(_Object(
            shape=str(rng.choice(classes)),
            texture=_texture(str(rng.choice(TEXTURES)), 2 * max_size, rng),
            centre=rng.uniform(side / 2, size - side / 2, size=2),
            velocity=np.array([speed * math.cos(angle), speed * math.sin(angle)]),
            size=side,
            growth=float(rng.uniform(-0.01, 0.01)),
        ))
    video = np.empty((frames, size, size, 3), np.uint8)
    boxes: list[list[tuple[int, str, tuple[int, int, int, int], float]]] = []
    for t in range(frames):
        frame = background.copy()
        owner = np.full((size, size), -1, np.int16)  # which object is visible at each pixel
        placed = []
        for index, obj in enumerate(objects):  # list order = depth order: later objects in front
            side = max(4, int(round(obj.size)))
            x1, y1 = (int(round(c - side / 2)) for c in obj.centre)
            mask = _mask(obj.shape, side)
            pattern = cv2.resize(obj.texture, (side, side), interpolation=cv2.INTER_NEAREST)
            fx1, fy1, fx2, fy2 = max(x1, 0), max(y1, 0), min(x1 + side, size), min(y1 + side, size)
            sub = mask[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1]
            frame[fy1:fy2, fx1:fx2][sub] = pattern[fy1 - y1 : fy2 - y1, fx1 - x1 : fx2 - x1][sub]
            owner[fy1:fy2, fx1:fx2][sub] = index
            placed.append((index, obj.shape, (fx1, fy1, fx2, fy2), int(sub.sum())))
        video[t] = frame
        frame_boxes = []
        for index, shape, box, area in placed:
            visible = int((owner == index).sum())
            hidden = 1.0 - visible / max(area, 1)
            if hidden <= HIDDEN and box[2] > box[0] and box[3] > box[1]:
                frame_boxes.append((index, shape, box, round(hidden, 3)))
        boxes.append(frame_boxes)
        for obj in objects:  # move, bounce off the border, grow
            obj.size = float(np.clip(obj.size * (1 + obj.growth), min_size * 0.8, max_size))
            obj.centre = obj.centre + obj.velocity
            for axis in range(2):
                low, high = obj.size / 2, size - obj.size / 2
                if not low <= obj.centre[axis] <= high:
                    obj.velocity[axis] = -obj.velocity[axis]
                    obj.centre[axis] = float(np.clip(obj.centre[axis], low, high))
    return video, boxes


def draw_boxes(frames: np.ndarray, boxes: list[list[tuple[int, str, tuple[int, int, int, int], float]]]) -> np.ndarray:
    """Frames with each object's box drawn in a colour per track id (for previews)."""
    palette = [(255, 64, 64), (64, 255, 64), (64, 128, 255), (255, 255, 64), (255, 64, 255), (64, 255, 255)]
    out = np.ascontiguousarray(frames.copy())
    for t, frame_boxes in enumerate(boxes):
        for track, _, (x1, y1, x2, y2), _ in frame_boxes:
            cv2.rectangle(out[t], (x1, y1), (x2 - 1, y2 - 1), palette[track % len(palette)], 1)
    return out


def generate_moving_objects(
    out_dir: str | Path,
    num: int = 60,
    *,
    frames: int = 16,
    size: int = 128,
    max_objects: int = 3,
    classes: tuple[str, ...] = CLASSES,
    split: str = "trainval",
    val_fraction: float = 0.25,
    empty_videos: int = 0,
    seed: int = 0,
    gifs: int = 3,
    overwrite: bool = False,
) -> Path:
    """Write ``num`` Moving Objects videos as a detection dataset in ``out_dir``; returns ``out_dir``.

    ``split="trainval"`` assigns ``val_fraction`` of the videos to ``val`` at random, the rest to
    ``train``; another name puts every video in that split. ``empty_videos`` of them (the last ones)
    contain no objects. Videos already written are kept (a re-run resumes); a non-empty ``out_dir``
    holding something else needs ``overwrite``.
    """
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord
    from kinetoscope.data.objects import ObjectBox, write_objects
    from kinetoscope.synth.preview import write_gif
    from kinetoscope.synth.temporal_shapes import split_assignment
    from kinetoscope.utils import progress

    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(f"unknown class(es) {unknown}; choose from {CLASSES}")
    if num < 1 or not 0 <= empty_videos <= num:
        raise ValueError(f"num must be >= 1 and 0 <= empty_videos <= num, got num={num}, empty_videos={empty_videos}")
    out = Path(out_dir)
    store = DatasetStore(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        if not (store.meta_path.is_file() and store.meta().get("source") == "kinetoscope synth moving-objects"):
            raise FileExistsError(f"output directory {out} is not empty; pass overwrite=True (CLI: --overwrite)")
    splits = split_assignment(num, split, val_fraction, seed)
    rows, records = [], []
    for i in progress(range(num), total=num, description="moving-objects"):
        video_id = f"objects_{i:05d}"
        limit = 0 if i >= num - empty_videos else max_objects
        video, boxes = moving_objects_video(np.random.SeedSequence(seed, spawn_key=(i,)), frames, size, limit, classes)
        if overwrite or not store.has_frames(video_id):
            store.write_frames(video_id, video)
        rows += [ObjectBox(video_id, t, track, shape, *map(float, box), occluded)
                 for t, frame_boxes in enumerate(boxes) for track, shape, box, occluded in frame_boxes]
        records.append(VideoRecord(video_id=video_id, label="", split=splits[i], fps=10.0, num_frames=frames,
                                   duration=frames / 10.0))
        if i < gifs:
            write_gif(out / "previews" / f"{video_id}.gif", draw_boxes(video, boxes), fps=10, scale=2)
    write_objects(out, rows)
    store.write_records(records)
    store.write_meta({
        "name": "moving-objects", "task": "detection", "classes": list(classes), "fps": 10, "size": [size, size],
        "channels": 3, "frames": frames, "num": num, "max_objects": max_objects, "empty_videos": empty_videos,
        "split": split, "val_fraction": val_fraction if split == "trainval" else None, "seed": seed,
        "source": "kinetoscope synth moving-objects",
    })
    return out
