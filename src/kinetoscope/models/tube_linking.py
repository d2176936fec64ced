"""Linking per-frame detections into object tubes with tracklets (Feichtenhofer 2017 §8.4).

For each class c, a tube picks one detection per frame. Consecutive picks ``D_i^t, D_j^{t+tau}`` score
(Eq. 8.5-8.6)::

    s_c = p_{i,c}^t + p_{j,c}^{t+tau} + psi,   psi = 1 if some tracklet T^{t,t+tau} overlaps D_i^t
                                                        and D_j^{t+tau} each by IoU > 0.5, else 0

and the tube maximising the mean of ``s_c`` over the video (Eq. 8.7) is found by Viterbi dynamic
programming (Gkioxari & Malik 2015). Its detections are removed and the search repeats on the
remaining ones until none is left. Every detection of a tube is then rescored by adding the mean of
the tube's ``alpha = 50%`` highest scores, which lifts detections the detector scored low (occlusion,
blur, an unusual pose) when they sit on a well-detected tube.

Frames where a class has no (remaining) detection are passed over: the tube continues from the
previous frame it covers to the next, with ``psi = 0`` across the gap — the document's tubes span the
whole video, which is the same whenever every frame has a candidate (it keeps 25 per class and frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from kinetoscope.layers.boxes import box_iou


@dataclass
class FrameDetections:
    """The detections of one frame: ``boxes [N, 4]`` (x1, y1, x2, y2), ``labels [N]`` (class index),
    ``scores [N]`` (softmax probability of that class)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor

    @classmethod
    def empty(cls) -> FrameDetections:
        return cls(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), torch.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class Tracklets:
    """Box correspondences from frame t to the next linked frame: ``source [M, 4]`` at t and
    ``target [M, 4]`` at t + tau (the track regressor's output for the boxes ``source``)."""

    source: torch.Tensor
    target: torch.Tensor

    @classmethod
    def empty(cls) -> Tracklets:
        return cls(torch.zeros(0, 4), torch.zeros(0, 4))


@dataclass
class Tube:
    """One class's tube: ``frames[i]`` holds detection ``indices[i]`` of that frame."""

    label: int
    frames: list[int]
    indices: list[int]
    score: float  # mean of the alpha highest detection scores, added to each of them


def track_links(
    a: FrameDetections, b: FrameDetections, tracks: Tracklets, iou_threshold: float = 0.5
) -> torch.Tensor:
    """``psi [len(a), len(b)]`` of Eq. 8.6: 1 where one tracklet overlaps detection i of ``a`` at t and
    detection j of ``b`` at t + tau by IoU > ``iou_threshold``."""
    if len(a) == 0 or len(b) == 0 or len(tracks.source) == 0:
        return torch.zeros(len(a), len(b))
    at_source = (box_iou(a.boxes, tracks.source) > iou_threshold).float()  # [N, M]
    at_target = (box_iou(b.boxes, tracks.target) > iou_threshold).float()  # [N', M]
    return (at_source @ at_target.T > 0).float()


def viterbi_tube(unary: Sequence[torch.Tensor], pairwise: Sequence[torch.Tensor]) -> list[int]:
    """The path maximising ``sum_t (unary[t][i_t] + unary[t+1][i_{t+1}] + pairwise[t][i_t, i_{t+1}])``.

    ``unary[t]`` is ``[N_t]`` (N_t >= 1), ``pairwise[t]`` is ``[N_t, N_{t+1}]``; returns ``i_t`` per step.
    """
    best = torch.zeros_like(unary[0])
    back = []
    for t, links in enumerate(pairwise):
        total = best[:, None] + unary[t][:, None] + unary[t + 1][None, :] + links
        best, arg = total.max(0)
        back.append(arg)
    path = [int(best.argmax())]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


def rescore(scores: torch.Tensor, alpha: float = 0.5) -> float:
    """The mean of the ``ceil(alpha * n)`` highest of a tube's ``n`` scores (§8.4's re-weighting)."""
    top = max(1, math.ceil(alpha * len(scores)))
    return float(scores.sort(descending=True).values[:top].mean())


def link_class(
    detections: Sequence[FrameDetections],
    tracks: Sequence[Tracklets],
    label: int,
    iou_threshold: float = 0.5,
    *,
    alpha: float = 0.5,
) -> list[Tube]:
    """All tubes of class ``label``, best first (Eq. 8.7 repeated on the remaining detections);
    ``tracks[t]`` links frame t to frame t + 1 of ``detections``."""
    pools = [torch.nonzero(d.labels == label).flatten() for d in detections]
    remaining = [torch.ones(len(p), dtype=torch.bool) for p in pools]
    tubes = []
    while True:
        frames = [t for t in range(len(detections)) if remaining[t].any()]
        if not frames:
            return tubes
        candidates = [pools[t][remaining[t]] for t in frames]
        subsets = [FrameDetections(detections[t].boxes[c], detections[t].labels[c], detections[t].scores[c])
                   for t, c in zip(frames, candidates, strict=True)]
        pairwise = [
            track_links(subsets[n], subsets[n + 1], tracks[frames[n]], iou_threshold)
            if frames[n + 1] == frames[n] + 1 else torch.zeros(len(subsets[n]), len(subsets[n + 1]))
            for n in range(len(frames) - 1)
        ]
        path = viterbi_tube([s.scores for s in subsets], pairwise)
        indices = [int(candidates[n][i]) for n, i in enumerate(path)]
        for n, i in enumerate(path):
            remaining[frames[n]][torch.nonzero(remaining[frames[n]]).flatten()[i]] = False
        scores = torch.stack([detections[t].scores[i] for t, i in zip(frames, indices, strict=True)])
        tubes.append(Tube(label, frames, indices, rescore(scores, alpha)))


def link_tubes(
    detections: Sequence[FrameDetections],
    tracks: Sequence[Tracklets],
    num_classes: int,
    *,
    iou_threshold: float = 0.5,
    alpha: float = 0.5,
) -> tuple[list[Tube], list[torch.Tensor]]:
    """Link a video's detections (one :class:`FrameDetections` per frame, ``len - 1`` tracklet sets)
    into tubes of every class and rescore them (§8.4).

    Returns ``(tubes, rescored)``: ``rescored[t][i]`` is detection i of frame t's score after linking
    (its own score plus its tube's top-``alpha`` mean). A video without detections gives no tubes.
    """
    if len(tracks) != max(len(detections) - 1, 0):
        raise ValueError(
            f"{len(detections)} frames need {max(len(detections) - 1, 0)} tracklet sets, got {len(tracks)}"
        )
    tubes: list[Tube] = []
    rescored = [d.scores.clone() for d in detections]
    for label in range(num_classes):
        for tube in link_class(detections, tracks, label, iou_threshold, alpha=alpha):
            for t, i in zip(tube.frames, tube.indices, strict=True):
                rescored[t][i] = detections[t].scores[i] + tube.score
            tubes.append(tube)
    return tubes, rescored
