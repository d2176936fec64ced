"""Detect & Track (D&T): joint object detection and tracking in video (Feichtenhofer 2017 Ch. 8).

Architecture (§8.3, Fig. 8.1-8.2), for two frames ``I^t, I^{t+tau}`` sharing one trunk:

========================  =====================================================================
trunk                     ResNet (:class:`~kinetoscope.models.twostream.FrameResNet`, per frame);
                          conv5 with unit stride and dilation 2, so conv4 and conv5 have stride 16
RPN                       3x3 conv on conv4 + sibling 1x1 convs: objectness and box deltas at
                          ``5 scales x 3 ratios = 15`` anchors; NMS 0.7 keeps 300 proposals
R-FCN head                3x3 conv, dilation 6, on conv5 -> 512 channels; sibling 1x1 convs give
                          ``k²(C+1)`` class maps and ``4k²`` box maps, pooled by position-
                          sensitive RoI pooling (k = 7) and averaged (voting)
correlation               Eq. 8.4 at conv3 (position stride 2), conv4, conv5, d = 8 (3 x 289 maps)
RoI tracking              ``{x_corr, x_reg^t, x_reg^{t+tau}}`` -> 1x1 conv -> ``4k²`` maps, pooled
                          at the frame-t boxes -> ``Delta^{t+tau}`` (Eq. 8.2-8.3)
========================  =====================================================================

Loss (Eq. 8.1): ``(1/N) sum CE + lambda (1/N_fg) sum_fg sL1(b, b*) + lambda (1/N_tra) sum sL1(Delta,
Delta*)`` with lambda = 1, plus the RPN's own losses; an RoI is foreground at IoU >= 0.5, and track
targets exist for ground-truth objects present in both frames (same ``track_id``).

Inference over a video (:meth:`DetectTrack.detect_video`): every frame is detected (per class:
NMS at IoU 0.3 with box voting, at most 25 boxes), and the track regressor moves each detection of
frame t to frame t + tau; :mod:`kinetoscope.models.tube_linking` links them into tubes.

The document's scale is ``detect_track`` (ResNet-101, 512 head channels, anchors of 32-512 px);
``detect_track_cpu`` is the same architecture with a narrow ResNet-18 trunk and anchors for
~128-px frames. Deviations (docs/deviations.md, "Detect & Track training"): OHEM is replaced by
Fast R-CNN's random sampling of 128 RoIs at 25 % foreground; the RoI-tracking maps come from a 1x1
conv on the stacked correlation and box maps (position-sensitive pooling needs ``4k²`` channels);
correlation is divided by the channel count (see :mod:`kinetoscope.layers.correlation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.layers.boxes import (
    anchor_shapes,
    box_iou,
    box_voting,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    grid_anchors,
    nms,
)
from kinetoscope.layers.correlation import Correlation
from kinetoscope.layers.ps_roi_pool import PSRoIPool
from kinetoscope.models.tube_linking import FrameDetections, Tracklets
from kinetoscope.models.twostream import FrameResNet
from kinetoscope.registry import register_model

STRIDE = 16
Targets = Sequence[Sequence[dict[str, torch.Tensor]]]  # [batch][frame] -> {"boxes", "labels", "ids"}


def dilate_conv5(trunk: FrameResNet) -> None:
    """R-FCN's conv5: unit spatial stride (stride 32 -> 16) and dilation 2 in its 3x3 convs (§8.3.2)."""
    for module in trunk.layer4.modules():
        if isinstance(module, nn.Conv3d):
            module.stride = (1, 1, 1)
            if module.kernel_size == (1, 3, 3):
                module.dilation, module.padding = (1, 2, 2), (0, 2, 2)


def frames_to_images(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, H, W] -> [B*T, C, H, W]`` (frame-major within each batch item)."""
    return x.transpose(1, 2).flatten(0, 1)


class DetectTrack(nn.Module):
    """D&T on frames ``[B, 3, T, H, W]``; see the module docstring. ``num_classes`` object classes
    (background is added). ``forward(frames, targets)`` returns the training losses;
    ``forward(frames)`` (eval) the detections and tracklets of each video of the batch."""

    streams = ("rgb",)
    per_frame = False
    task = "detection"
    explain_layer = "trunk.layer4"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 101,
        width: int = 64,
        *,
        head_channels: int = 512,
        k: int = 7,
        anchor_scales: Sequence[float] = (32, 64, 128, 256, 512),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        max_displacement: int = 8,
        proposals_train: int = 300,
        proposals_test: int = 300,
        pre_nms: int = 6000,
        rpn_batch: int = 256,
        roi_batch: int = 128,
        fg_fraction: float = 0.25,
        min_box: float = 4.0,
        test_nms: float = 0.3,
        detections_per_class: int = 25,
        score_threshold: float = 0.01,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.k = k
        self.settings = dict(proposals_train=proposals_train, proposals_test=proposals_test, pre_nms=pre_nms,
                             rpn_batch=rpn_batch, roi_batch=roi_batch, fg_fraction=fg_fraction, min_box=min_box,
                             test_nms=test_nms, detections_per_class=detections_per_class,
                             score_threshold=score_threshold)
        self.trunk = FrameResNet(depth, 1, in_channels, width=width)
        self.trunk.fc = nn.Identity()
        dilate_conv5(self.trunk)
        channels = self.trunk.stage_channels
        self.register_buffer("anchor_shapes", anchor_shapes(anchor_scales, anchor_ratios), persistent=False)
        anchors = len(anchor_scales) * len(anchor_ratios)
        self.rpn_conv = nn.Conv2d(channels["layer3"], head_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(head_channels, anchors, 1)
        self.rpn_reg = nn.Conv2d(head_channels, 4 * anchors, 1)
        self.reduce = nn.Conv2d(channels["layer4"], head_channels, 3, padding=6, dilation=6)
        self.cls_maps = nn.Conv2d(head_channels, k * k * (num_classes + 1), 1)
        self.reg_maps = nn.Conv2d(head_channels, 4 * k * k, 1)
        self.corr3 = Correlation(max_displacement, stride=2)
        self.corr4 = Correlation(max_displacement)
        self.corr5 = Correlation(max_displacement)
        self.track_maps = nn.Conv2d(3 * self.corr4.out_channels + 2 * 4 * k * k, 4 * k * k, 1)
        self.pool = PSRoIPool(k, 1.0 / STRIDE)
        for head in (self.rpn_conv, self.rpn_cls, self.rpn_reg, self.reduce, self.cls_maps, self.reg_maps,
                     self.track_maps):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    # ------------------------------------------------------------------------------------ features
    def features(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame maps of ``[B, 3, T, H, W]`` as ``[B*T, ...]`` images: conv3/4/5, RPN outputs, the
        class and box score maps. H and W are padded to multiples of 16 (boxes are unaffected)."""
        height, width = frames.shape[-2:]
        frames = F.pad(frames, (0, -width % STRIDE, 0, -height % STRIDE))
        t = self.trunk
        conv3 = t.layer2(t.layer1(t.stem(frames)))
        conv4 = t.layer3(conv3)
        conv5 = t.layer4(conv4)
        conv3, conv4, conv5 = (frames_to_images(x) for x in (conv3, conv4, conv5))
        rpn = F.relu(self.rpn_conv(conv4))
        head = F.relu(self.reduce(conv5))
        return {"conv3": conv3, "conv4": conv4, "conv5": conv5, "rpn_cls": self.rpn_cls(rpn),
                "rpn_reg": self.rpn_reg(rpn), "cls_maps": self.cls_maps(head), "reg_maps": self.reg_maps(head),
                "size": torch.tensor([height, width])}

    def track_features(self, maps: dict[str, torch.Tensor], first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The ``4k²`` RoI-tracking maps of the image pairs ``(first[i], second[i])`` (indices into maps)."""
        stack = [self.corr3(maps["conv3"][first], maps["conv3"][second]),
                 self.corr4(maps["conv4"][first], maps["conv4"][second]),
                 self.corr5(maps["conv5"][first], maps["conv5"][second]),
                 maps["reg_maps"][first], maps["reg_maps"][second]]
        return self.track_maps(torch.cat(stack, dim=1))

    # ----------------------------------------------------------------------------------- proposals
    def anchors(self, height: int, width: int) -> torch.Tensor:
        return grid_anchors(self.anchor_shapes, height, width, STRIDE).to(self.anchor_shapes.device)

    def rpn_outputs(self, maps: dict[str, torch.Tensor], image: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness logits ``[H*W*A]`` and deltas ``[H*W*A, 4]`` of one image, in anchor order."""
        logits = maps["rpn_cls"][image].permute(1, 2, 0).reshape(-1)
        a, h, w = maps["rpn_cls"].shape[1:]
        deltas = maps["rpn_reg"][image].reshape(a, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)
        return logits, deltas

    def proposals(self, maps: dict[str, torch.Tensor], image: int, count: int) -> torch.Tensor:
        """Up to ``count`` proposals ``[P, 4]`` of one image: decode, clip, drop tiny, top-N, NMS 0.7."""
        height, width = maps["size"].tolist()
        logits, deltas = self.rpn_outputs(maps, image)
        anchors = self.anchors(*maps["rpn_cls"].shape[2:])
        boxes = clip_boxes(decode_boxes(deltas.detach(), anchors), height, width)
        scores = logits.detach()
        sides = boxes[:, 2:] - boxes[:, :2]
        keep = (sides >= self.settings["min_box"]).all(1)
        boxes, scores = boxes[keep], scores[keep]
        top = scores.topk(min(self.settings["pre_nms"], len(scores))).indices
        boxes, scores = boxes[top], scores[top]
        return boxes[nms(boxes, scores, 0.7)[:count]]

    # ---------------------------------------------------------------------------------------- train
    def rpn_loss(
        self, maps: dict[str, torch.Tensor], image: int, gt: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Faster R-CNN's RPN loss for one image: 256 anchors, <= 50 % positive (IoU >= 0.7 or the best
        anchor of an object), negative below 0.3."""
        logits, deltas = self.rpn_outputs(maps, image)
        anchors = self.anchors(*maps["rpn_cls"].shape[2:])
        labels = torch.full((len(anchors),), -1, dtype=torch.long, device=logits.device)
        if len(gt):
            iou = box_iou(anchors, gt)
            best, match = iou.max(1)
            labels[best < 0.3] = 0
            labels[best >= 0.7] = 1
            best_per_object = iou.max(0).values
            labels[((iou == best_per_object[None]) & (best_per_object[None] > 0)).any(1)] = 1
        else:
            labels[:] = 0
            match = torch.zeros(len(anchors), dtype=torch.long, device=logits.device)
        batch = self.settings["rpn_batch"]
        positive = torch.nonzero(labels == 1).flatten()
        positive = positive[torch.randperm(len(positive))[: batch // 2]]
        negative = torch.nonzero(labels == 0).flatten()
        negative = negative[torch.randperm(len(negative))[: batch - len(positive)]]
        sampled = torch.cat([positive, negative])
        cls_loss = F.binary_cross_entropy_with_logits(logits[sampled], (labels[sampled] == 1).float())
        if len(positive) == 0:
            return cls_loss, deltas.sum() * 0
        targets = encode_boxes(gt[match[positive]], anchors[positive])
        reg_loss = F.smooth_l1_loss(deltas[positive], targets, beta=1 / 9, reduction="sum") / len(sampled)
        return cls_loss, reg_loss

    def sample_rois(
        self, proposals: torch.Tensor, gt: torch.Tensor, gt_labels: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """RoIs for the R-FCN losses: proposals + ground truth, ``roi_batch`` of them at <= 25 %
        foreground (IoU >= 0.5). Returns ``(rois [R, 4], labels [R] (0 = background), box targets [R, 4])``."""
        rois = torch.cat([proposals, gt])
        if len(gt) == 0:
            rois = rois[torch.randperm(len(rois))[: self.settings["roi_batch"]]]
            return rois, torch.zeros(len(rois), dtype=torch.long), torch.zeros(len(rois), 4)
        best, match = box_iou(rois, gt).max(1)
        foreground = torch.nonzero(best >= 0.5).flatten()
        background = torch.nonzero(best < 0.5).flatten()
        fg_count = int(self.settings["roi_batch"] * self.settings["fg_fraction"])
        foreground = foreground[torch.randperm(len(foreground))[:fg_count]]
        background = background[torch.randperm(len(background))[: self.settings["roi_batch"] - len(foreground)]]
        chosen = torch.cat([foreground, background])
        labels = torch.cat([gt_labels[match[foreground]], torch.zeros(len(background), dtype=torch.long)])
        targets = encode_boxes(gt[match[chosen]], rois[chosen])
        return rois[chosen], labels, targets

    def losses(self, frames: torch.Tensor, targets: Targets) -> dict[str, torch.Tensor]:
        """Eq. 8.1 (+ RPN losses) on ``[B, 3, 2, H, W]`` frame pairs; ``targets[b][f]`` per frame."""
        batch, _, time = frames.shape[:3]
        if time != 2:
            raise ValueError(f"D&T trains on frame pairs [B, 3, 2, H, W], got {tuple(frames.shape)}")
        maps = self.features(frames)
        rpn_cls, rpn_reg, rois, labels, box_targets = [], [], [], [], []
        for b in range(batch):
            for f in range(time):
                image, target = b * time + f, targets[b][f]
                cls_loss, reg_loss = self.rpn_loss(maps, image, target["boxes"])
                rpn_cls.append(cls_loss)
                rpn_reg.append(reg_loss)
                count = self.settings["proposals_train"]
                sampled, roi_labels, roi_targets = self.sample_rois(self.proposals(maps, image, count),
                                                                    target["boxes"], target["labels"])
                rois.append(F.pad(sampled, (1, 0), value=float(image)))
                labels.append(roi_labels)
                box_targets.append(roi_targets)
        rois_t, labels_t, box_targets_t = torch.cat(rois), torch.cat(labels), torch.cat(box_targets)
        class_logits = self.pool(maps["cls_maps"], rois_t)
        box_deltas = self.pool(maps["reg_maps"], rois_t)
        foreground = labels_t > 0
        det_reg = F.smooth_l1_loss(box_deltas[foreground], box_targets_t[foreground], reduction="sum")
        losses = {
            "rpn_cls": torch.stack(rpn_cls).mean(),
            "rpn_reg": torch.stack(rpn_reg).mean(),
            "cls": F.cross_entropy(class_logits, labels_t),
            "reg": det_reg / max(int(foreground.sum()), 1),
            "track": self.track_loss(maps, targets),
        }
        return losses

    def track_loss(self, maps: dict[str, torch.Tensor], targets: Targets) -> torch.Tensor:
        """``(1/N_tra) sum sL1(Delta, Delta*)`` over ground-truth objects present in both frames."""
        pairs, rois, deltas = [], [], []
        for b, (first, second) in enumerate(targets):
            common = [(i, j) for i, a in enumerate(first["ids"].tolist()) for j, c in enumerate(second["ids"].tolist())
                      if a == c]
            if not common:
                continue
            i, j = (torch.tensor(x) for x in zip(*common, strict=True))
            pairs.append(b)
            rois.append(F.pad(first["boxes"][i], (1, 0), value=float(len(pairs) - 1)))
            deltas.append(encode_boxes(second["boxes"][j], first["boxes"][i]))
        if not pairs:
            return maps["reg_maps"].sum() * 0 + self.track_maps.weight.sum() * 0
        index = torch.tensor(pairs)
        track = self.track_features(maps, 2 * index, 2 * index + 1)
        predicted = self.pool(track, torch.cat(rois))
        target = torch.cat(deltas)
        return F.smooth_l1_loss(predicted, target, reduction="sum") / len(target)

    # ------------------------------------------------------------------------------------ inference
    def detect_image(self, maps: dict[str, torch.Tensor], image: int) -> FrameDetections:
        """Per-class detections of one image: softmax scores, class-agnostic box regression, NMS with
        box voting, at most ``detections_per_class`` per class (labels 0..C-1)."""
        s = self.settings
        height, width = maps["size"].tolist()
        proposals = self.proposals(maps, image, s["proposals_test"])
        rois = F.pad(proposals, (1, 0), value=float(image))
        probs = self.pool(maps["cls_maps"], rois).softmax(1)
        boxes = clip_boxes(decode_boxes(self.pool(maps["reg_maps"], rois), proposals), height, width)
        out_boxes, out_labels, out_scores = [], [], []
        for c in range(1, self.num_classes + 1):
            candidates = torch.nonzero(probs[:, c] > s["score_threshold"]).flatten()
            cand_boxes, cand_scores = boxes[candidates], probs[candidates, c]
            keep = nms(cand_boxes, cand_scores, s["test_nms"])[: s["detections_per_class"]]
            out_boxes.append(box_voting(cand_boxes[keep], cand_boxes, cand_scores, 0.5))
            out_scores.append(cand_scores[keep])
            out_labels.append(torch.full((len(keep),), c - 1, dtype=torch.long))
        return FrameDetections(torch.cat(out_boxes), torch.cat(out_labels), torch.cat(out_scores))

    def track_boxes(self, maps: dict[str, torch.Tensor], first: int, second: int, boxes: torch.Tensor) -> Tracklets:
        """Move ``boxes`` of image ``first`` to image ``second`` with the track regressor."""
        if len(boxes) == 0:
            return Tracklets.empty()
        height, width = maps["size"].tolist()
        track = self.track_features(maps, torch.tensor([first]), torch.tensor([second]))
        deltas = self.pool(track, F.pad(boxes, (1, 0), value=0.0))
        return Tracklets(boxes, clip_boxes(decode_boxes(deltas, boxes), height, width))

    @torch.no_grad()
    def detect_video(
        self, frames: torch.Tensor, track: bool = True, chunk: int = 8
    ) -> tuple[list[FrameDetections], list[Tracklets]]:
        """Detections of every frame of ``[3, T, H, W]`` and, with ``track``, the tracklets from each
        frame's detections to the next frame (``T - 1`` sets; empty without ``track``). Frames go
        through the trunk ``chunk`` at a time; the last frame's maps carry over to the next chunk."""
        detections: list[FrameDetections] = []
        tracklets: list[Tracklets] = []
        previous: dict[str, torch.Tensor] | None = None
        for start in range(0, frames.shape[1], chunk):
            maps = self.features(frames[None, :, start : start + chunk])
            if previous is not None:
                maps = {key: torch.cat([previous[key], value]) if key != "size" else value
                        for key, value in maps.items()}
            offset = 0 if previous is None else 1
            for i in range(offset, len(maps["conv4"])):
                detections.append(self.detect_image(maps, i))
                if track and i > 0:
                    tracklets.append(self.track_boxes(maps, i - 1, i, detections[-2].boxes))
            previous = {key: value[-1:] for key, value in maps.items() if key != "size"}
        if not track:
            tracklets = [Tracklets.empty() for _ in range(max(len(detections) - 1, 0))]
        return detections, tracklets

    def forward(self, frames: torch.Tensor, targets: Targets | None = None) -> Any:
        if targets is not None:
            return self.losses(frames, targets)
        return [self.detect_video(video) for video in frames]


@register_model("detect_track")
def detect_track(num_classes: int = 30, in_channels: int = 3, **options: Any) -> DetectTrack:
    """D&T at the document's scale: ResNet-101 trunk, 512-channel head, 15 anchors of 32-512 px, k = 7,
    d = 8, 300 proposals (Feichtenhofer 2017 §8.5.2). Reference: `Detect to Track and Track to Detect
    <https://arxiv.org/abs/1710.03958>`__."""
    return DetectTrack(num_classes, in_channels, **{"depth": 101, **options})


@register_model("detect_track_cpu")
def detect_track_cpu(num_classes: int = 3, in_channels: int = 3, **options: Any) -> DetectTrack:
    """The same D&T at CPU scale: ResNet-18 trunk of width 16, 64-channel head, 15 anchors of 12-64 px
    for ~128-px frames, 64 proposals, 64 RoIs per frame."""
    cpu = dict(depth=18, width=16, head_channels=64, anchor_scales=(12, 18, 26, 38, 56), proposals_train=64,
               proposals_test=64, pre_nms=600, rpn_batch=128, roi_batch=64)
    return DetectTrack(num_classes, in_channels, **{**cpu, **options})
