"""Boxes for two-stage detectors: IoU, anchors, box encoding, NMS and box voting, in plain PyTorch.

The R-CNN family's box machinery as used by R-FCN and Detect & Track (Feichtenhofer 2017 §8.3.2,
§8.5.2): boxes are ``float [N, 4]`` as ``(x1, y1, x2, y2)`` in pixels with exclusive far edges
(width ``x2 - x1``), anchors at ``scales x aspect ratios`` per feature-map cell (Ren et al. 2016),
the centre/size regression parametrisation of Girshick 2015 (the same one Feichtenhofer 2017 Eq. 8.2-8.3
uses for tracks), greedy non-maximum suppression, and bounding-box voting (Gidaris & Komodakis 2015),
which replaces each kept box by the score-weighted mean of the boxes it suppressed.

Regression targets are divided by fixed standard deviations ``(0.1, 0.1, 0.2, 0.2)`` as in the public
Faster R-CNN / R-FCN code (Girshick 2015 normalises targets the same way), so the heads regress
quantities of order one; :func:`encode_boxes` with ``stds=(1, 1, 1, 1)`` gives Eq. 8.2-8.3 exactly.
torchvision (whose ``ops.nms`` / ``box_iou`` do the same) is not importable beside the CPU torch here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

BOX_STDS = (0.1, 0.1, 0.2, 0.2)
MAX_LOG_SCALE = math.log(1000.0 / 16)  # clamp of dw, dh before exp (Faster R-CNN)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``[N, 4] -> [N]``; degenerate boxes have area 0."""
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise intersection over union, ``[N, 4] x [M, 4] -> [N, M]`` (0 where both areas are 0)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clip ``[N, 4]`` boxes into a ``height x width`` frame."""
    x = boxes[:, 0::2].clamp(0, width)
    y = boxes[:, 1::2].clamp(0, height)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def to_center_size(boxes: torch.Tensor) -> torch.Tensor:
    """``(x1, y1, x2, y2) -> (cx, cy, w, h)``."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([boxes[:, :2] + 0.5 * wh, wh], dim=1)


def from_center_size(boxes: torch.Tensor) -> torch.Tensor:
    """``(cx, cy, w, h) -> (x1, y1, x2, y2)``."""
    half = 0.5 * boxes[:, 2:]
    return torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], dim=1)


def encode_boxes(targets: torch.Tensor, references: torch.Tensor, stds: Sequence[float] = BOX_STDS) -> torch.Tensor:
    """Regression targets of ``targets`` relative to ``references`` (both ``[N, 4]``) -> ``[N, 4]``:
    ``((x' - x) / w, (y' - y) / h, log(w' / w), log(h' / h)) / stds`` (Feichtenhofer 2017 Eq. 8.2-8.3)."""
    t, r = to_center_size(targets), to_center_size(references)
    r_wh = r[:, 2:].clamp(min=1e-6)
    deltas = torch.cat([(t[:, :2] - r[:, :2]) / r_wh, torch.log(t[:, 2:].clamp(min=1e-6) / r_wh)], dim=1)
    return deltas / deltas.new_tensor(stds)


def decode_boxes(deltas: torch.Tensor, references: torch.Tensor, stds: Sequence[float] = BOX_STDS) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: apply ``[N, 4]`` deltas to ``[N, 4]`` reference boxes."""
    d = deltas * deltas.new_tensor(stds)
    r = to_center_size(references)
    centre = r[:, :2] + d[:, :2] * r[:, 2:]
    size = r[:, 2:] * torch.exp(d[:, 2:].clamp(max=MAX_LOG_SCALE))
    return from_center_size(torch.cat([centre, size], dim=1))


def anchor_shapes(scales: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """``[len(scales) * len(ratios), 4]`` anchors centred at 0: side ``scale`` at ratio 1, area ``scale²``
    kept for ratio ``h / w`` (Ren et al. 2016; Feichtenhofer 2017 §8.5.2 uses 5 scales x 3 ratios = 15)."""
    shapes = []
    for scale in scales:
        for ratio in ratios:
            w = scale / math.sqrt(ratio)
            h = scale * math.sqrt(ratio)
            shapes.append((-w / 2, -h / 2, w / 2, h / 2))
    return torch.tensor(shapes, dtype=torch.float32)


def grid_anchors(shapes: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """Anchors at every cell of a ``height x width`` feature map of ``stride`` px: ``[H * W * A, 4]``,
    ordered (row, column, anchor) — the order of a ``[A, H, W]`` head output permuted to ``[H, W, A]``."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) * stride
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + shapes.reshape(1, -1, 4)).reshape(-1, 4)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    Repeatedly keep the best remaining box and drop every remaining box whose IoU with it exceeds
    ``iou_threshold``. Ties in score keep the lower index first (a stable sort).
    """
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS run separately per group id (e.g. class): boxes of different groups never suppress each other."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    offset = groups.to(boxes.dtype)[:, None] * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offset, scores, iou_threshold)


def box_voting(
    kept: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.5
) -> torch.Tensor:
    """Bounding-box voting (Gidaris & Komodakis 2015): each ``kept`` box ``[K, 4]`` becomes the
    score-weighted mean of the candidate ``boxes`` ``[N, 4]`` (with ``scores`` ``[N]``) overlapping it
    by IoU >= ``iou_threshold``; a kept box without such a neighbour is unchanged."""
    if kept.numel() == 0 or boxes.numel() == 0:
        return kept.clone()
    weights = (box_iou(kept, boxes) >= iou_threshold).to(boxes.dtype) * scores[None, :].clamp(min=0)
    total = weights.sum(1, keepdim=True)
    voted = weights @ boxes / total.clamp(min=1e-12)
    return torch.where(total > 0, voted, kept)
