"""STVI (Ilic 2024 Ch. 6): unsupervised part segmentation from anchor masks, flow and SLIC supervoxels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kinetoscope.explain.stvi import (
    default_scales,
    remove_background_flow,
    segmentation_accuracy,
    select_tubes,
    stvi,
    temporal_extent,
    track_masks,
    undersegmentation_error,
)


def _articulated(frames: int = 24, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A figure walking right 1 px/frame over a textured background: torso (1, red), head (2, yellow) and
    an arm (3, blue) swinging about the shoulder. Returns frames uint8 [T,H,W,3] and part labels [T,H,W]."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    background = np.stack([60 + 40 * noise, 110 + 40 * noise, 60 + 40 * noise], -1)
    video = np.zeros((frames, size, size, 3), np.uint8)
    parts = np.zeros((frames, size, size), np.int32)
    for t in range(frames):
        frame, label = background.copy(), np.zeros((size, size), np.int32)
        x, y = 22 + t, 36
        shapes = [np.zeros((size, size), np.uint8) for _ in range(3)]
        cv2.rectangle(shapes[0], (x, y), (x + 22, y + 34), 1, -1)
        cv2.circle(shapes[1], (x + 11, y - 10), 10, 1, -1)
        angle = np.deg2rad(35 * np.sin(2 * np.pi * t / 12)) - np.pi / 6
        sx, sy = x + 22, y + 6
        cv2.line(shapes[2], (sx, sy), (sx + int(round(24 * np.cos(angle))), sy + int(round(24 * np.sin(angle)))), 1, 9)
        for index, (shape, colour) in enumerate(zip(shapes, [(200, 40, 40), (230, 200, 60), (40, 60, 210)],
                                                    strict=True), start=1):
            inside = (shape > 0) & (label == 0)
            frame[inside], label[inside] = colour, index
        texture = rng.integers(-10, 10, (size, size, 1)) * (label > 0)[..., None]
        video[t], parts[t] = np.clip(frame + texture, 0, 255).astype(np.uint8), label
    return video, parts


def test_background_flow_removal_is_eq_6_1():
    flow = np.zeros((2, 8, 8, 2), np.float32)
    flow[..., 0], flow[..., 1] = 3.0, -1.0  # camera motion everywhere
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:5, 2:5] = True
    flow[masks] += (1.0, 2.0)  # the object moves on top of it
    out = remove_background_flow(flow, masks)
    np.testing.assert_allclose(out[~masks], 0, atol=1e-6)
    np.testing.assert_allclose(out[masks], np.broadcast_to((1.0, 2.0), (18, 2)), atol=1e-6)


def test_default_scales_half_box_diagonal_and_95th_percentile_of_object_flow():
    masks = np.zeros((3, 64, 64), bool)
    masks[:, 10:40, 5:45] = True  # 30 x 40 box: diagonal 50
    flow = np.zeros((3, 64, 64, 2), np.float32)
    flow[masks] = np.random.default_rng(0).uniform(0, 4, (masks.sum(), 2))
    sigma, tau = default_scales(masks, flow)
    assert sigma == pytest.approx(25.0)
    assert tau == pytest.approx(np.percentile(np.linalg.norm(flow[masks], axis=-1), 95))


def test_tracking_carries_the_anchor_along_the_flow_until_the_next_anchor():
    anchor = np.zeros((32, 32), bool)
    anchor[8:14, 4:10] = True
    flow = np.zeros((5, 32, 32, 2), np.float32)
    flow[..., 0] = 2.0
    second = np.zeros((32, 32), bool)
    second[20:24, 20:24] = True
    masks = track_masks({1: anchor, 4: second}, flow, 6)
    np.testing.assert_array_equal(masks[2], np.roll(anchor, 2, axis=1))
    np.testing.assert_array_equal(masks[3], np.roll(anchor, 4, axis=1))
    np.testing.assert_array_equal(masks[4], second)
    np.testing.assert_array_equal(masks[0], np.roll(anchor, -2, axis=1))  # before the first anchor: backwards
    with pytest.raises(ValueError, match="outside the video"):
        track_masks({9: anchor}, flow, 6)


def test_tube_selection_keeps_tubes_more_than_omega_inside_the_masks():
    tubes = np.zeros((1, 1, 30), np.int32)
    tubes[0, 0, :10], tubes[0, 0, 10:20], tubes[0, 0, 20:] = 1, 2, 3
    masks = np.zeros((1, 1, 30), bool)
    masks[0, 0, :8] = True  # tube 1: 0.8 inside
    masks[0, 0, 10:17] = True  # tube 2: exactly 0.7 — not more than 0.7
    masks[0, 0, 20:25] = True  # tube 3: 0.5
    assert select_tubes(tubes, masks, 0.7) == [1]
    assert select_tubes(tubes, masks, 0.4) == [1, 2, 3]


def test_metrics_on_known_segmentations():
    truth = np.zeros((2, 1, 8), np.int32)
    truth[:, 0, :4] = 1
    labels = np.zeros((2, 1, 8), np.int32)
    labels[:, 0, :3] = 1  # inside part 1
    labels[:, 0, 3:6] = 2  # 1/3 in part 1, leaks 2 voxels out of it
    labels[0, 0, 7] = 3  # one frame only, in the background
    assert segmentation_accuracy(labels, truth) == pytest.approx(6 / 8)  # tube 2 is mostly outside: not counted
    assert undersegmentation_error(labels, truth) == pytest.approx(4 / 8)  # tube 2's 4 voxels outside the part
    assert temporal_extent(labels) == pytest.approx((1 + 1 + 0.5) / 3)


def test_stvi_finds_the_parts_of_a_synthetic_articulated_object():
    frames, parts = _articulated()
    anchors = {t: parts[t] > 0 for t in range(0, len(frames), 6)}  # masks every 6th frame
    result = stvi(frames, anchors, flow_method="farneback")
    assert result.params["tubes"] <= 15 and result.params["selected"] >= 3
    assert result.labels.shape == parts.shape and result.labels.max() == result.params["selected"]
    acc = segmentation_accuracy(result.labels, parts)
    ue = undersegmentation_error(result.labels, parts)
    tex = temporal_extent(result.labels)
    assert acc >= 0.7 and ue <= 0.3 and tex >= 0.9
    assert segmentation_accuracy(result.labels, parts > 0) >= 0.7  # the object as a whole
    for part in (1, 2, 3):  # every part is mostly covered by STVIs that lie mostly inside it
        in_part = parts == part
        owners = [s for s in np.unique(result.labels[in_part]) if s > 0
                  and (in_part & (result.labels == s)).sum() >= 0.5 * (result.labels == s).sum()]
        assert owners, f"part {part} has no STVI of its own"
    iou = (result.masks & (parts > 0)).sum() / (result.masks | (parts > 0)).sum()
    assert iou > 0.8  # the tracked masks between anchors follow the object
    literal = stvi(frames, anchors, scale=1.0)  # the document's scales as written blur the parts away
    assert segmentation_accuracy(literal.labels, parts) < acc


def test_stvi_one_frame_and_bad_input():
    frames, parts = _articulated(frames=1)
    result = stvi(frames, {0: parts[0] > 0})
    assert result.labels.shape == parts.shape
    with pytest.raises(ValueError, match="anchor mask of frame 0"):
        stvi(frames, {0: np.ones((5, 5), bool)})
    with pytest.raises(ValueError, match="no object"):
        stvi(frames, {0: np.zeros(parts.shape[1:], bool)})
    with pytest.raises(ValueError, match="uint8"):
        stvi(frames.astype(float), {0: parts[0] > 0})
