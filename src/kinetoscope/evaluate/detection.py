"""Frame mAP for object detection in video (Feichtenhofer 2017 §8.5.1: mean AP over classes at IoU 0.5).

Protocol of the ImageNet VID / PASCAL VOC evaluation: per class, all detections of all frames are
ranked by score; each is a true positive if it overlaps a not yet matched ground-truth box of its
class in its frame by IoU >= 0.5 (the best such box is taken), otherwise a false positive; AP is the
area under the precision-recall curve with precision made monotone (VOC 2010+ "all points"). mAP
averages the classes that have ground truth.

torchmetrics' ``MeanAveragePrecision`` cannot be used here: it needs ``pycocotools`` or
``faster_coco_eval`` as a backend (not installed; ``from torchmetrics.detection import
MeanAveragePrecision`` fails without one), and it computes COCO's 101-point interpolated AP rather
than the VID protocol.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch

from kinetoscope.layers.boxes import box_iou


def average_precision(tp: Sequence[bool], num_ground_truth: int) -> float:
    """AP of a ranked list of hits (``tp[i]`` for the i-th highest-scored detection) over
    ``num_ground_truth`` objects: area under the monotone precision envelope (VOC all-point AP)."""
    if num_ground_truth == 0:
        return float("nan")
    hits = np.asarray(tp, dtype=float)
    if hits.size == 0:
        return 0.0
    true_pos = np.cumsum(hits)
    recall = np.concatenate([[0.0], true_pos / num_ground_truth, [1.0]])
    precision = np.concatenate([[0.0], true_pos / np.arange(1, hits.size + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def frame_map(
    detections: Mapping[Hashable, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    ground_truth: Mapping[Hashable, tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict[str, object]:
    """mAP over frames. ``detections[frame_key] = (boxes [N, 4], labels [N], scores [N])``,
    ``ground_truth[frame_key] = (boxes [M, 4], labels [M])`` for every evaluated frame (frames with
    no objects included). Returns ``{"map": float, "ap": [per class, NaN without ground truth],
    "num_ground_truth": [per class]}``."""
    unknown = set(detections) - set(ground_truth)
    if unknown:
        examples = sorted(map(str, unknown))[:3]
        raise ValueError(f"detections for {len(unknown)} frame(s) without ground truth, e.g. {examples}")
    aps, counts = [], []
    for label in range(num_classes):
        ranked: list[tuple[float, Hashable, int]] = []
        for key, (_, labels, scores) in detections.items():
            ranked += [(float(scores[i]), key, int(i)) for i in torch.nonzero(labels == label).flatten()]
        ranked.sort(key=lambda item: -item[0])
        taken = {key: torch.zeros(int((gt_labels == label).sum()), dtype=torch.bool)
                 for key, (_, gt_labels) in ground_truth.items()}
        overlaps = {}
        for key, (boxes, _, _) in detections.items():
            gt_boxes, gt_labels = ground_truth[key]
            overlaps[key] = box_iou(boxes, gt_boxes[gt_labels == label])
        hits = []
        for _, key, i in ranked:
            iou = overlaps[key][i].clone()
            iou[taken[key]] = -1.0
            best = int(iou.argmax()) if iou.numel() else -1
            hit = best >= 0 and bool(iou[best] >= iou_threshold)
            if hit:
                taken[key][best] = True
            hits.append(hit)
        count = sum(len(t) for t in taken.values())
        counts.append(count)
        aps.append(average_precision(hits, count))
    valid = [ap for ap in aps if not np.isnan(ap)]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "ap": aps, "num_ground_truth": counts}
