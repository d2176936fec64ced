"""Shape and texture test domains from per-frame actor masks or boxes (Broomé 2022 §5.4, Diving48).

Following Geirhos et al.'s shape/texture bias, extended to time (Broomé 2022 §5.4, Fig. 5.2):

* **S1** (shape): the *segmented* actor over a blurred background — pixels inside the mask are
  unchanged, every other pixel is the Gaussian-blurred frame. Needs masks.
* **S2** (shape): the actor's *bounding box* over a blurred background — pixels inside the box (the
  union of the boxes when there are several actors) are unchanged, the rest blurred.
* **T** (texture): the actor's box filled with a constant mean pixel, the background kept unchanged;
  the class evidence (the actor's movement) is gone, so a model without texture bias drops to chance.

Fill of T: ``"imagenet"`` (default; the thesis fills with "the average ImageNet pixel value",
``round(255 * (0.485, 0.456, 0.406))`` = (124, 116, 104); one-channel frames get their mean, 115),
``"clip"`` (the clip's own mean pixel per channel), or an explicit value per channel.

Boxes derived from masks are the tight bounding boxes of the nonzero pixels (S2's boxes in the
thesis are the mask predictions at threshold 0, i.e. boxes around the divers). Boxes are
``(x0, y0, x1, y1)`` in pixels of the cached frame, ``x1``/``y1`` exclusive; a frame without a box has
no actor (S2: fully blurred; T: unchanged).

Evaluation (Broomé 2022 §5.4): S1/V and S2/V ↑ (robustness to a change of appearance), T/V ↓ and T/S1 ↓ (texture
bias); see :func:`kinetoscope.report.suites.domain_ratio_rows` for the ``*`` rule and
:func:`kinetoscope.suites.reversal.run_shape_texture_suite` for evaluating runs on the domains.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

DOMAINS = ("S1", "S2", "T")
IMAGENET_MEAN_PIXEL = (124, 116, 104)  # round(255 * (0.485, 0.456, 0.406))


def boxes_from_masks(masks: np.ndarray) -> list[list[tuple[int, int, int, int]]]:
    """Bool/uint8 ``[T, H, W]`` masks -> per frame a list with the tight box ``(x0, y0, x1, y1)`` of the
    nonzero pixels (empty list for an empty mask)."""
    masks = np.asarray(masks) != 0
    out: list[list[tuple[int, int, int, int]]] = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        out.append([(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)] if len(xs) else [])
    return out


def box_masks(boxes: list[list[tuple[int, int, int, int]]], height: int, width: int) -> np.ndarray:
    """Per-frame box lists -> bool ``[T, H, W]``: True inside any box of that frame (clipped to the frame)."""
    out = np.zeros((len(boxes), height, width), dtype=bool)
    for t, frame_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in frame_boxes:
            x0, x1 = max(0, int(x0)), min(width, int(x1))
            y0, y1 = max(0, int(y0)), min(height, int(y1))
            if x1 > x0 and y1 > y0:
                out[t, y0:y1, x0:x1] = True
    return out


def blur_frames(frames: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Gaussian blur (``cv2.GaussianBlur``, kernel from ``sigma``) of every frame of uint8 ``[T, H, W, C]``."""
    out = np.empty_like(frames)
    for t, frame in enumerate(frames):
        blurred = cv2.GaussianBlur(np.ascontiguousarray(frame), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        out[t] = blurred.reshape(frame.shape)
    return out


def _fill_value(frames: np.ndarray, fill: str | tuple[float, ...] | float) -> np.ndarray:
    channels = frames.shape[-1]
    if isinstance(fill, str):
        if fill == "imagenet":
            mean = np.asarray(IMAGENET_MEAN_PIXEL, dtype=np.float64)
            value = mean if channels == 3 else np.full(channels, mean.mean())
        elif fill == "clip":
            value = frames.reshape(-1, channels).mean(0)
        else:
            raise ValueError(f"fill {fill!r} is not known; accepted: 'imagenet', 'clip' or a value per channel")
    else:
        value = np.broadcast_to(np.asarray(fill, dtype=np.float64), (channels,))
    return np.clip(np.rint(value), 0, 255).astype(np.uint8)


def shape_texture_domains(
    frames: np.ndarray,
    masks: np.ndarray | None = None,
    boxes: list[list[tuple[int, int, int, int]]] | None = None,
    blur_sigma: float = 5.0,
    fill: str | tuple[float, ...] | float = "imagenet",
) -> dict[str, np.ndarray]:
    """The S1, S2 and T versions of a clip uint8 ``[T, H, W, C]`` (each uint8 ``[T, H, W, C]``).

    ``masks`` bool ``[T, H, W]`` (actor pixels) gives all three (boxes from the masks unless ``boxes``
    is given too); ``boxes`` alone gives S2 and T only."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4:
        raise ValueError(f"frames must be uint8 [T, H, W, C], got {frames.dtype} {frames.shape}")
    steps, height, width, _ = frames.shape
    if masks is None and boxes is None:
        raise ValueError("shape_texture_domains needs per-frame actor masks or boxes")
    if masks is not None:
        masks = np.asarray(masks) != 0
        if masks.shape != (steps, height, width):
            raise ValueError(f"masks must be [T, H, W] = {(steps, height, width)} like the frames, got {masks.shape}")
    if boxes is None:
        boxes = boxes_from_masks(masks)
    if len(boxes) != steps:
        raise ValueError(f"boxes are given for {len(boxes)} frames, the clip has {steps}")
    inside_box = box_masks(boxes, height, width)[..., None]
    blurred = blur_frames(frames, blur_sigma)
    out = {}
    if masks is not None:
        out["S1"] = np.where(masks[..., None], frames, blurred)
    out["S2"] = np.where(inside_box, frames, blurred)
    out["T"] = np.where(inside_box, _fill_value(frames, fill), frames)
    return out


def read_boxes_csv(path: str | Path) -> dict[str, dict[int, list[tuple[int, int, int, int]]]]:
    """``video_id, frame, x0, y0, x1, y1`` rows (several rows per frame = several actors) ->
    ``{video_id: {frame: [boxes]}}``."""
    path = Path(path)
    required = {"video_id", "frame", "x0", "y0", "x1", "y1"}
    out: dict[str, dict[int, list[tuple[int, int, int, int]]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; needed: {', '.join(sorted(required))}")
        for line, row in enumerate(reader, start=2):
            try:
                box = tuple(int(round(float(row[k]))) for k in ("x0", "y0", "x1", "y1"))
                out[row["video_id"]][int(row["frame"])].append(box)  # type: ignore[arg-type]
            except ValueError:
                raise ValueError(f"{path} line {line}: frame and box coordinates must be numbers, got {row}") from None
    return out


def make_domain_datasets(
    src_root: str | Path,
    out_root: str | Path,
    masks_dir: str | Path | None = None,
    boxes_csv: str | Path | None = None,
    domains: tuple[str, ...] = DOMAINS,
    blur_sigma: float = 5.0,
    fill: str | tuple[float, ...] | float = "imagenet",
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``out_root/<domain>`` (``DatasetStore``s: same ids, labels, splits) for each of ``domains``.

    ``masks_dir``: ``<video_id>.npy`` bool/uint8 ``[T, H, W]`` per video, aligned with the cached
    frames; ``boxes_csv``: see :func:`read_boxes_csv`. S1 needs masks. Videos already written are
    skipped (resume); a non-empty domain directory from other settings is refused unless ``overwrite``."""
    import json
    import shutil

    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.utils import atomic_write_json, progress

    unknown = [d for d in domains if d not in DOMAINS]
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; accepted: {', '.join(DOMAINS)}")
    if masks_dir is None and boxes_csv is None:
        raise ValueError("make_domain_datasets needs masks_dir (per-video .npy masks) or boxes_csv")
    if "S1" in domains and masks_dir is None:
        raise ValueError("domain S1 (segmented actor) needs masks_dir; with boxes only, build S2 and T")
    source = DatasetStore(src_root)
    meta, records = source.meta(), source.records()
    boxes = read_boxes_csv(boxes_csv) if boxes_csv is not None else None
    settings = {"source": str(source.root), "masks_dir": str(masks_dir) if masks_dir else None,
                "boxes_csv": str(boxes_csv) if boxes_csv else None, "blur_sigma": blur_sigma,
                "fill": fill if isinstance(fill, str) else list(np.atleast_1d(fill).tolist())}
    stores = {}
    for domain in domains:
        out = Path(out_root) / domain
        marker = out / "domain.json"
        wanted = {**settings, "domain": domain}
        if out.exists() and any(out.iterdir()):
            previous = json.loads(marker.read_text()) if marker.is_file() else None
            if previous != wanted:
                if not overwrite:
                    raise FileExistsError(f"{out} holds other data; pass overwrite=True (CLI: --overwrite)")
                shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(marker, wanted)
        stores[domain] = DatasetStore(out)
    for record in progress(records, description="shape/texture domains"):
        vid = record.video_id
        if all(stores[d].has_frames(vid) for d in domains):
            continue
        frames = np.asarray(source.read_frames(vid, mmap=False))
        masks = None
        if masks_dir is not None:
            mask_path = Path(masks_dir) / f"{vid}.npy"
            if not mask_path.is_file():
                raise FileNotFoundError(f"no mask for video {vid!r}: {mask_path} is missing")
            masks = np.load(mask_path, allow_pickle=False)
            if masks.shape != frames.shape[:3]:
                raise ValueError(
                    f"mask {mask_path} is {masks.shape}; video {vid!r} needs [T, H, W] = {frames.shape[:3]}"
                )
        video_boxes = None
        if boxes is not None:
            per_frame = boxes.get(vid, {})
            video_boxes = [per_frame.get(t, []) for t in range(len(frames))]
        versions = shape_texture_domains(frames, masks, video_boxes, blur_sigma, fill)
        for domain in domains:
            stores[domain].write_frames(vid, versions[domain])
    for domain, store in stores.items():
        store.write_records(records)
        store.write_meta({**meta, "name": f"{meta.get('name', source.root.name)}-{domain}", "domain": domain,
                          "source": "kinetoscope synth domains", "shape_texture": settings})
    return {d: s.root for d, s in stores.items()}


__all__ = ["DOMAINS", "IMAGENET_MEAN_PIXEL", "blur_frames", "box_masks", "boxes_from_masks",
           "make_domain_datasets", "read_boxes_csv", "shape_texture_domains"]
