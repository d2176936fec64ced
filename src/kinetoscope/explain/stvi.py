"""Space-time volumes of interest (STVI; Ilic 2024 Ch. 6): unsupervised part segmentation of an object.

Given a video, anchor masks of one object every ``n`` frames (the thesis uses Mask R-CNN every 20
frames; any masks will do) and optical flow, :func:`stvi` returns the object's parts as tubes:

1. **Tracking** (§6.3 "Preprocessing"): the object mask is carried from each anchor to the next frames
   along the flow (nearest-neighbour forward placement, small holes closed), and replaced by the next
   anchor when one is given.
2. **Background-flow removal** (Eq. 6.1): ``F̂_i = F_i − mean(F_i ⊙ ¬M_i)`` per frame (the mean over
   the pixels outside the mask).
3. **Object-centred sub-volume**: per frame a window centred on the mask's bounding box, all windows
   the size of the largest box plus ``margin`` (frames padded at the border), stacked over time.
4. **Features** (Eq. 6.4): ``φ = (α·(x, y, t), L, a, b, β·(F̂_u, F̂_v))``, 8 values per voxel; the Lab and
   flow channels are smoothed with the spatio-temporal Gaussian of Eqs. 6.2–6.3 (``σ`` in x and y,
   ``τ`` in t). The thesis' "0-parameter" scales: ``σ`` = half the diagonal of the average bounding
   box, ``τ`` = the 95th percentile of ``‖F̂‖`` inside the masks, ``α ∝ σ``, ``β ∝ τ``. The constants are
   not given; kinetoscope smooths with ``0.1·σ`` and ``0.1·τ`` and uses ``α = 0.05·σ``, ``β = τ`` (all
   parameters; docs/deviations.md).
5. **Grouping**: SLIC (scikit-image) on the sub-volume into at most ``k = 15`` supervoxels ("tubes"),
   without enforcing connectivity (§6.3), the α-weighted position entering as SLIC's compactness.
6. **Tube selection**: a tube is kept when more than ``ω = 0.7`` of its voxels on the anchor frames lie
   inside the anchor masks.

Metrics (§6.4) against a ground-truth segmentation (object or parts, ``0`` = background):
:func:`segmentation_accuracy` (ACC, 3D segmentation accuracy), :func:`undersegmentation_error` (UE)
and :func:`temporal_extent` (TEX, normalised temporal extent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class STVIResult:
    """``labels`` int ``[T, H, W]`` in frame coordinates: 0 = not an STVI, 1..n = the selected tubes;
    ``tubes`` the SLIC labels of every tube (selected or not); ``masks`` the tracked object masks;
    ``params`` σ, τ, α, β, k, ω and the number of tubes."""

    labels: np.ndarray
    tubes: np.ndarray
    masks: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


def track_masks(anchors: dict[int, np.ndarray], flow: np.ndarray, steps: int, close: int = 3) -> np.ndarray:
    """Masks bool ``[T, H, W]`` for every frame: each anchor moved forward frame by frame along ``flow``
    ``[T-1, H, W, 2]`` (frame t to t+1) until the next anchor; frames before the first anchor take it
    moved backwards (the negated flow of the pair). ``close``: size of the closing that fills the holes
    nearest-neighbour placement leaves."""
    from scipy import ndimage

    from kinetoscope.synth.appearance_free import move_noise

    if not anchors:
        raise ValueError("STVI needs at least one anchor mask")
    height, width = next(iter(anchors.values())).shape
    bad = [t for t in anchors if not 0 <= t < steps]
    if bad:
        raise ValueError(f"anchor frame(s) {bad} lie outside the video's {steps} frames")
    structure = np.ones((close, close), bool)
    empty = np.zeros((height, width, 1), np.uint8)

    def move(mask: np.ndarray, field_: np.ndarray) -> np.ndarray:
        moved = move_noise(mask[..., None].astype(np.uint8), field_, empty)[..., 0] > 0
        return ndimage.binary_closing(moved, structure) | moved if close > 1 else moved

    out = np.zeros((steps, height, width), bool)
    first = min(anchors)
    out[first] = np.asarray(anchors[first]) != 0
    for t in range(first + 1, steps):
        out[t] = (np.asarray(anchors[t]) != 0) if t in anchors else move(out[t - 1], flow[t - 1])
    for t in range(first - 1, -1, -1):
        out[t] = move(out[t + 1], -flow[t])
    return out


def remove_background_flow(flow: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Eq. 6.1: per frame, the flow minus its mean over the pixels outside the mask (unchanged when the
    mask covers the whole frame). ``flow`` ``[T, H, W, 2]``, ``masks`` bool ``[T, H, W]``."""
    out = np.asarray(flow, dtype=np.float32).copy()
    for t in range(len(out)):
        outside = ~masks[t]
        if outside.any():
            out[t] -= out[t][outside].mean(0)
    return out


def _boxes(masks: np.ndarray) -> np.ndarray:
    """Per frame ``(y0, x0, y1, x1)`` of the mask (the previous frame's box when a mask is empty)."""
    boxes = np.zeros((len(masks), 4), np.int64)
    last = None
    for t, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(ys):
            last = (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
        boxes[t] = last if last is not None else (0, 0, mask.shape[0], mask.shape[1])
    if last is None:
        raise ValueError("every tracked mask is empty: the anchor masks mark no object")
    first = next(t for t, m in enumerate(masks) if m.any())
    boxes[:first] = boxes[first]
    return boxes


def default_scales(masks: np.ndarray, object_flow: np.ndarray) -> tuple[float, float]:
    """``σ`` = half the diagonal of the average bounding box; ``τ`` = the 95th percentile of ``‖F̂‖``
    inside the masks (at least 0.5 frame, so a still object still gets some temporal smoothing)."""
    boxes = _boxes(masks).astype(np.float64)
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sigma = 0.5 * float(np.hypot(heights.mean(), widths.mean()))
    magnitude = np.linalg.norm(object_flow[..., :2], axis=-1)[masks]
    tau = float(np.percentile(magnitude, 95)) if magnitude.size else 0.0
    return sigma, max(tau, 0.5)


def _crop_windows(masks: np.ndarray, margin: int) -> tuple[np.ndarray, int, int]:
    boxes = _boxes(masks)
    size_h = int((boxes[:, 2] - boxes[:, 0]).max()) + 2 * margin
    size_w = int((boxes[:, 3] - boxes[:, 1]).max()) + 2 * margin
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) // 2, (boxes[:, 1] + boxes[:, 3]) // 2], 1)
    origins = centres - np.array([size_h // 2, size_w // 2])  # top-left, may lie outside the frame
    return origins, size_h, size_w


def stvi(
    frames: np.ndarray,
    anchors: dict[int, np.ndarray],
    *,
    flow: np.ndarray | None = None,
    flow_method: str = "farneback",
    k: int = 15,
    omega: float = 0.7,
    sigma: float | None = None,
    tau: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
    scale: float = 0.1,
    alpha_factor: float = 0.05,
    beta_factor: float = 1.0,
    margin: int = 2,
    max_iter: int = 10,
) -> STVIResult:
    """STVIs of the object marked by ``anchors`` ``{frame: bool [H, W]}`` in ``frames`` uint8
    ``[T, H, W, 3]`` (Ilic 2024 §6.3). ``flow``: ``[T-1, H, W, 2]`` (frame t to t+1) or computed with
    ``flow_method``. Unless given, ``σ`` and ``τ`` are ``scale`` times the documented scales of
    :func:`default_scales`, ``α = alpha_factor·σ`` and ``β = beta_factor·τ`` (docs/deviations.md: at
    ``scale=1`` the smoothing erases the parts). A one-frame video has no flow: the object flow is zero."""
    from scipy import ndimage
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    if not 0.0 <= omega <= 1.0:
        raise ValueError(f"omega must lie in [0, 1], got {omega}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    steps, height, width = frames.shape[:3]
    for t, mask in anchors.items():
        if np.asarray(mask).shape != (height, width):
            raise ValueError(f"anchor mask of frame {t} is {np.asarray(mask).shape}; the frames are {(height, width)}")
    if steps < 2:
        per_frame = np.zeros((steps, height, width, 2), np.float32)
    else:
        if flow is None:
            from kinetoscope.flow import compute_flow

            flow = compute_flow(frames, flow_method)
        flow = np.asarray(flow, dtype=np.float32)[..., :2]
        if flow.shape != (steps - 1, height, width, 2):
            raise ValueError(f"flow must be [T-1, H, W, 2] = {(steps - 1, height, width, 2)}, got {flow.shape}")
        per_frame = np.concatenate([flow, flow[-1:]], 0)  # frame t's motion; the last frame repeats
    masks = track_masks(anchors, per_frame[:-1] if steps > 1 else per_frame, steps)
    object_flow = remove_background_flow(per_frame, masks)
    doc_sigma, doc_tau = default_scales(masks, object_flow)
    sigma = scale * doc_sigma if sigma is None else float(sigma)
    tau = scale * doc_tau if tau is None else float(tau)
    alpha = alpha_factor * sigma if alpha is None else float(alpha)
    beta = beta_factor * tau if beta is None else float(beta)

    # object-centred sub-volume
    origins, size_h, size_w = _crop_windows(masks, margin)
    pad = max(size_h, size_w)
    lab = rgb2lab(frames).astype(np.float32)
    features = np.concatenate([lab, beta * object_flow], -1)  # [T, H, W, 5]
    padded = np.pad(features, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    volume = np.stack([padded[t, origins[t, 0] + pad:origins[t, 0] + pad + size_h,
                              origins[t, 1] + pad:origins[t, 1] + pad + size_w] for t in range(steps)])
    volume = ndimage.gaussian_filter(volume, sigma=(tau, sigma, sigma, 0))  # Eqs. 6.2-6.3, per channel

    # SLIC (scikit-image) rescales the features to [0, 1] and weighs position by compactness / grid step:
    # compactness = α · step / range reproduces Eq. 6.4's weighting of position (α) against Lab and βF̂.
    value_range = float(volume.max() - volume.min()) or 1.0
    n_segments, tubes = k, None
    while n_segments >= 1:
        step = (volume[..., 0].size / n_segments) ** (1 / 3)
        tubes = slic(volume, n_segments=n_segments, compactness=alpha * step / value_range, max_num_iter=max_iter,
                     spacing=(1, 1, 1), convert2lab=False, enforce_connectivity=False, start_label=1,
                     channel_axis=-1)
        if len(np.unique(tubes)) <= k:
            break
        n_segments -= 1  # SLIC's grid can hold a few more centres than asked: ask for fewer

    # back to frame coordinates
    frame_tubes = np.zeros((steps, height, width), np.int32)
    for t in range(steps):
        y0, x0 = origins[t]
        ys, xs = slice(max(0, y0), min(height, y0 + size_h)), slice(max(0, x0), min(width, x0 + size_w))
        frame_tubes[t, ys, xs] = tubes[t, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    anchor_frames = sorted(anchors)
    anchor_masks = np.stack([np.asarray(anchors[t]) != 0 for t in anchor_frames])
    keep = select_tubes(frame_tubes[anchor_frames], anchor_masks, omega)
    labels = np.zeros_like(frame_tubes)
    for new, tube in enumerate(keep, start=1):
        labels[frame_tubes == tube] = new
    params = {"sigma": sigma, "tau": tau, "alpha": alpha, "beta": beta, "k": k, "omega": omega,
              "documented_sigma": doc_sigma, "documented_tau": doc_tau,
              "tubes": int(len(np.unique(tubes))), "selected": len(keep), "window": [size_h, size_w]}
    return STVIResult(labels=labels, tubes=frame_tubes, masks=masks, params=params)


def select_tubes(tubes: np.ndarray, masks: np.ndarray, omega: float = 0.7) -> list[int]:
    """Tube ids (``> 0``) of which more than ``omega`` of the voxels in ``tubes`` lie inside ``masks``
    (both ``[n, H, W]``, the anchor frames)."""
    ids, totals = np.unique(tubes[tubes > 0], return_counts=True)
    inside = np.bincount(tubes[masks & (tubes > 0)], minlength=int(tubes.max()) + 1)
    return [int(i) for i, total in zip(ids, totals, strict=True) if inside[i] / total > omega]


def _segments(labels: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(labels) if v > 0]


def segmentation_accuracy(labels: np.ndarray, truth: np.ndarray) -> float:
    """3D segmentation accuracy (ACC; Xu & Corso 2012): per ground-truth segment ``g``, the share of
    ``g`` covered by the supervoxels that have at least half of their volume inside ``g``; averaged
    over the segments."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    scores = []
    for g in _segments(truth):
        in_g = truth == g
        covered = 0
        for s in _segments(labels[in_g]):
            in_s = labels == s
            overlap = int((in_s & in_g).sum())
            if overlap >= 0.5 * in_s.sum():
                covered += overlap
        scores.append(covered / in_g.sum())
    if not scores:
        raise ValueError("the ground truth holds no segment")
    return float(np.mean(scores))


def undersegmentation_error(labels: np.ndarray, truth: np.ndarray) -> float:
    """3D undersegmentation error (UE; Xu & Corso 2012): per ground-truth segment ``g``, the volume of
    the supervoxels that touch ``g`` beyond ``g`` itself, relative to ``|g|``; averaged over the segments."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    scores = []
    for g in _segments(truth):
        in_g = truth == g
        touching = _segments(labels[in_g])
        outside = sum(int(((labels == s) & ~in_g).sum()) for s in touching)
        scores.append(outside / in_g.sum())
    if not scores:
        raise ValueError("the ground truth holds no segment")
    return float(np.mean(scores))


def temporal_extent(labels: np.ndarray) -> float:
    """Normalised temporal extent (TEX; Chang et al. 2013): the number of frames each supervoxel
    appears in over the video length, averaged over the supervoxels."""
    labels = np.asarray(labels)
    ids = _segments(labels)
    if not ids:
        return 0.0
    present = [(labels == s).reshape(len(labels), -1).any(1).sum() for s in ids]
    return float(np.mean(present) / len(labels))


__all__ = ["STVIResult", "default_scales", "remove_background_flow", "segmentation_accuracy", "select_tubes",
           "stvi", "temporal_extent", "track_masks", "undersegmentation_error"]
