"""Correlation, position-sensitive RoI pooling, NMS, box voting and box coding (Feichtenhofer 2017 §8.3)."""

from __future__ import annotations

import math

import pytest
import torch

from kinetoscope.layers.boxes import (
    anchor_shapes,
    batched_nms,
    box_iou,
    box_voting,
    decode_boxes,
    encode_boxes,
    grid_anchors,
    nms,
)
from kinetoscope.layers.correlation import correlation
from kinetoscope.layers.ps_roi_pool import ps_roi_pool, ps_vote


def loop_correlation(x1, x2, d, stride):
    """Eq. 8.4 written out: one inner product per position and offset."""
    b, c, h, w = x1.shape
    out = torch.zeros(b, (2 * d + 1) ** 2, math.ceil(h / stride), math.ceil(w / stride))
    for n in range(b):
        for oi, i in enumerate(range(0, h, stride)):
            for oj, j in enumerate(range(0, w, stride)):
                for p in range(-d, d + 1):
                    for q in range(-d, d + 1):
                        if 0 <= i + p < h and 0 <= j + q < w:
                            value = x1[n, :, i, j] @ x2[n, :, i + p, j + q]
                            out[n, (p + d) * (2 * d + 1) + q + d, oi, oj] = value / c
    return out


@pytest.mark.parametrize(("d", "stride", "size"), [(2, 1, (5, 7)), (3, 2, (8, 6)), (8, 1, (4, 5))])
def test_correlation_equals_direct_loop(d, stride, size):
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(2, 3, *size, generator=g), torch.randn(2, 3, *size, generator=g)
    assert torch.allclose(correlation(x1, x2, d, stride), loop_correlation(x1, x2, d, stride), atol=1e-5)


def test_correlation_peaks_at_the_displacement_of_a_shifted_map():
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(1, 16, 12, 12, generator=g)
    x2 = torch.roll(x1, shifts=(3, -2), dims=(2, 3))  # content moves down 3 rows, left 2 columns
    corr = correlation(x1, x2, max_displacement=8)
    best = corr[0, :, 4:8, 4:8].mean((1, 2)).argmax().item()
    assert divmod(best, 17) == (3 + 8, -2 + 8)


def test_ps_roi_pool_reads_each_bin_from_its_own_map():
    k, groups = 3, 2
    maps = torch.arange(groups * k * k, dtype=torch.float32)[None, :, None, None].expand(1, -1, 10, 10).contiguous()
    rois = torch.tensor([[0, 8.0, 8.0, 32.0, 36.0]])
    pooled = ps_roi_pool(maps, rois, output_size=k, spatial_scale=0.25)
    expected = torch.arange(groups * k * k, dtype=torch.float32).reshape(1, groups, k, k)
    assert torch.equal(pooled, expected)
    assert torch.equal(ps_vote(pooled), expected.mean((2, 3)))


def test_ps_roi_pool_of_a_ramp_is_the_bin_centre():
    """Hand-computed: map value = column index; RoI (0, 0, 8, 8) at scale 1, k = 2 -> bins cover
    columns [0, 4) and [4, 8), whose centres are 2 and 6 px, i.e. indices 1.5 and 5.5."""
    ramp = torch.arange(8, dtype=torch.float32).expand(8, 8)
    maps = ramp.expand(1, 4, 8, 8).contiguous()
    pooled = ps_roi_pool(maps, torch.tensor([[0, 0.0, 0.0, 8.0, 8.0]]), output_size=2, spatial_scale=1.0)
    assert torch.allclose(pooled[0, 0], torch.tensor([[1.5, 5.5], [1.5, 5.5]]))


def test_ps_roi_pool_uses_the_rois_batch_image_and_passes_gradients():
    maps = torch.stack([torch.zeros(4, 6, 6), torch.ones(4, 6, 6)]).requires_grad_()
    pooled = ps_roi_pool(maps, torch.tensor([[1, 0.0, 0.0, 6.0, 6.0], [0, 0.0, 0.0, 6.0, 6.0]]), 2, 1.0)
    assert pooled[0].eq(1).all() and pooled[1].eq(0).all()
    pooled.sum().backward()
    assert maps.grad[0].sum() == pytest.approx(4.0) and maps.grad[1].sum() == pytest.approx(4.0)


def brute_force_nms(boxes, scores, threshold):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        if all(box_iou(boxes[i : i + 1], boxes[j : j + 1]).item() <= threshold for j in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], 1)
    scores = torch.rand(60, generator=g)
    for threshold in (0.3, 0.5, 0.7):
        assert nms(boxes, scores, threshold).tolist() == brute_force_nms(boxes, scores.tolist(), threshold)


def test_batched_nms_never_suppresses_across_classes():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 0]), 0.5)
    assert sorted(keep.tolist()) == [0, 1]


def test_box_voting_averages_overlapping_boxes_by_score():
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]])
    scores = torch.tensor([0.75, 0.25, 0.9])
    voted = box_voting(boxes[:1], boxes, scores, iou_threshold=0.5)
    assert torch.allclose(voted, torch.tensor([[0.5, 0, 10.5, 10]]))


def test_encode_decode_round_trip_and_track_formula():
    ref = torch.tensor([[10.0, 20, 30, 60]])
    target = torch.tensor([[14.0, 18, 38, 66]])
    raw = encode_boxes(target, ref, stds=(1, 1, 1, 1))
    # Eq. 8.2-8.3: centres (20, 40) -> (26, 42), sizes (20, 40) -> (24, 48)
    assert torch.allclose(raw, torch.tensor([[6 / 20, 2 / 40, math.log(24 / 20), math.log(48 / 40)]]))
    assert torch.allclose(decode_boxes(encode_boxes(target, ref), ref), target, atol=1e-5)


def test_anchors_have_the_scales_and_ratios_on_the_grid():
    shapes = anchor_shapes((32, 64, 128, 256, 512), (0.5, 1, 2))
    assert shapes.shape == (15, 4)  # 5 scales x 3 ratios, Feichtenhofer 2017 §8.5.2
    areas = (shapes[:, 2] - shapes[:, 0]) * (shapes[:, 3] - shapes[:, 1])
    expected = [s * s for s in (32, 64, 128, 256, 512) for _ in range(3)]
    assert torch.allclose(areas, torch.tensor(expected, dtype=torch.float32))
    anchors = grid_anchors(shapes, 2, 3, 16)
    assert anchors.shape == (2 * 3 * 15, 4)
    centre = (anchors[15 * 4][:2] + anchors[15 * 4][2:]) / 2  # row 1, column 1
    assert centre.tolist() == [24.0, 24.0]
