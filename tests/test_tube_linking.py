"""Viterbi tube linking and rescoring (Feichtenhofer 2017 §8.4) and frame mAP (§8.5.1)."""

from __future__ import annotations

import math

import pytest
import torch

from kinetoscope.evaluate.detection import average_precision, frame_map
from kinetoscope.models.tube_linking import FrameDetections, Tracklets, link_tubes, rescore, viterbi_tube


def box(x, y, size=10.0):
    return [x, y, x + size, y + size]


def planted_video(frames=6, missed=3):
    """Two objects of class 0 moving right (tube A at y=0, tube B at y=40) and a static distractor of
    class 0 at y=80 that scores 0.4 only in frame ``missed``, where A's detection scores 0.05."""
    detections, tracks = [], []
    for t in range(frames):
        boxes = [box(5 * t, 0), box(5 * t, 40)]
        scores = [0.05 if t == missed else 0.9, 0.8]
        if t == missed:
            boxes.append(box(60, 80))
            scores.append(0.4)
        detections.append(FrameDetections(torch.tensor(boxes), torch.zeros(len(boxes), dtype=torch.long),
                                          torch.tensor(scores)))
        if t + 1 < frames:  # tracklets follow the true objects, slightly off
            tracks.append(Tracklets(torch.tensor([box(5 * t, 0), box(5 * t, 40)]),
                                    torch.tensor([box(5 * t + 6, 1), box(5 * t + 4, 41)])))
    return detections, tracks


def test_viterbi_finds_the_best_path():
    unary = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.2]), torch.tensor([0.5, 0.0])]
    pairwise = [torch.tensor([[0.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 0.0], [3.0, 0.0]])]
    # brute force over the 8 paths
    def total(path):
        return sum(unary[t][path[t]] + unary[t + 1][path[t + 1]] + pairwise[t][path[t], path[t + 1]] for t in range(2))
    best = max(((a, b, c) for a in range(2) for b in range(2) for c in range(2)), key=total)
    assert tuple(viterbi_tube(unary, pairwise)) == best == (0, 1, 0)


def test_linking_recovers_planted_tubes_through_a_missed_detection():
    detections, tracks = planted_video()
    tubes, rescored = link_tubes(detections, tracks, num_classes=1)
    paths = sorted((tube.frames, tube.indices) for tube in tubes)
    # tube A runs through its 0.05 detection (index 0) in frame 3, not through the 0.4 distractor
    assert (list(range(6)), [0] * 6) in paths and (list(range(6)), [1] * 6) in paths
    # A's missed detection now outranks the distractor (which forms a one-frame tube of its own)
    assert rescored[3][0] > rescored[3][2]
    assert rescored[3][0].item() == pytest.approx(0.05 + 0.9)  # + mean of the top 50% (3 of 6 = 0.9)
    assert len(tubes) == 3 and ([3], [2]) in paths


def test_without_tracklets_the_missed_frame_follows_the_distractor():
    detections, tracks = planted_video()
    no_tracks = [Tracklets.empty() for _ in tracks]
    tubes, _ = link_tubes(detections, no_tracks, num_classes=1)
    tube_a = next(tube for tube in tubes if tube.indices[0] == 0)
    assert tube_a.indices[3] != 0  # the pairwise term is what keeps tube A on its object


def test_a_frame_without_candidates_is_passed_over():
    detections, tracks = planted_video()
    detections[2] = FrameDetections.empty()
    tubes, rescored = link_tubes(detections, tracks, num_classes=1)
    assert all(tube.frames == [0, 1, 3, 4, 5] for tube in tubes[:2]) and rescored[2].numel() == 0


def test_video_without_objects_gives_empty_tubes():
    tubes, rescored = link_tubes([FrameDetections.empty() for _ in range(4)], [Tracklets.empty()] * 3, 2)
    assert tubes == [] and all(r.numel() == 0 for r in rescored)
    assert link_tubes([], [], 2) == ([], [])


def test_rescore_is_the_mean_of_the_top_alpha_scores():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3])
    assert rescore(scores, 0.5) == pytest.approx((0.9 + 0.7 + 0.5) / 3)
    assert rescore(scores, 1.0) == pytest.approx(0.5)


def test_average_precision_hand_computed():
    # ranked hits T, F, T over 3 objects: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    # monotone envelope: 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 beyond -> AP = 1/3 + 2/9
    assert average_precision([True, False, True], 3) == pytest.approx(1 / 3 + 2 / 9)
    assert average_precision([], 2) == 0.0 and math.isnan(average_precision([True], 0))


def test_frame_map_matches_each_object_once_and_ranks_across_frames():
    gt = {("v", 0): (torch.tensor([box(0, 0)]), torch.tensor([0])),
          ("v", 1): (torch.tensor([box(0, 0), box(50, 50)]), torch.tensor([0, 1])),
          ("v", 2): (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))}
    dets = {("v", 0): (torch.tensor([box(0, 0), box(1, 0)]), torch.tensor([0, 0]), torch.tensor([0.9, 0.8])),
            ("v", 1): (torch.tensor([box(0, 1), box(50, 50)]), torch.tensor([0, 1]), torch.tensor([0.7, 0.6])),
            ("v", 2): (torch.tensor([box(5, 5)]), torch.tensor([1]), torch.tensor([0.95]))}
    result = frame_map(dets, gt, num_classes=2)
    # class 0: T (0.9), F duplicate (0.8), T (0.7) over 2 objects -> 1*1/2 + 2/3*1/2
    assert result["ap"][0] == pytest.approx(0.5 + 1 / 3)
    # class 1: F (0.95, empty frame), T (0.6) over 1 object -> 1/2
    assert result["ap"][1] == pytest.approx(0.5)
    assert result["map"] == pytest.approx((0.5 + 1 / 3 + 0.5) / 2)
    assert result["num_ground_truth"] == [2, 1]
