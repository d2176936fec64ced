"""Benchmark sequences with known flow: independently moving layers with occlusion, and a smooth
non-rigid deformation. Their defining property: frame t+1 sampled at x + F(x) gives frame t back
wherever the content stays visible."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kinetoscope.flow import deformation_motion, endpoint_error, layered_motion

MARGIN = 12


def _back_warp_error(seq, t: int) -> np.ndarray:
    h, w = seq.flow.shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    following = seq.frames[t + 1, ..., 0].astype(np.float32)
    back = cv2.remap(following, xs + seq.flow[t, ..., 0], ys + seq.flow[t, ..., 1], cv2.INTER_CUBIC)
    return np.abs(back - seq.frames[t, ..., 0])


def test_layers_flow_explains_visible_pixels_and_not_occluded_ones():
    seq = layered_motion(num_frames=3, size=(128, 128), seed=3)
    assert seq.frames.shape == (3, 128, 128, 3) and seq.flow.shape == (2, 128, 128, 2)
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    for t in range(2):
        error = _back_warp_error(seq, t)[inner]
        inside, occluded = seq.regions["inside"][t][inner], seq.regions["occluded"][t][inner]
        boundary = seq.regions["boundary"][t][inner]
        assert inside.mean() > 0.8 and boundary.any() and occluded.any()
        assert not (inside & (boundary | occluded)).any()
        assert error[inside].mean() < 1.5  # grey levels: rounding and interpolation only
        assert error[occluded].mean() > 15 * error[inside].mean()


def test_layers_move_independently():
    seq = layered_motion(num_frames=2, size=(128, 128))
    # the first object (a pure translation by (4, -2)) covers its own centre at frame 0
    np.testing.assert_allclose(seq.flow[0, round(0.36 * 128), round(0.32 * 128)], [4.0, -2.0], atol=1e-5)
    # four layers, four different motions
    distinct = np.unique(np.round(seq.flow[0].reshape(-1, 2), 1), axis=0)
    assert len(distinct) > 50  # rotation and zoom layers vary over their area


def test_deformation_is_non_rigid_and_exact():
    seq = deformation_motion(num_frames=3, size=(96, 96), seed=1)
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    for t in range(2):
        assert _back_warp_error(seq, t)[inner].mean() < 1.5
        assert seq.flow[t][inner].reshape(-1, 2).std(axis=0).min() > 0.5  # not one global motion
    with pytest.raises(ValueError, match="too strong"):
        deformation_motion(num_frames=3, size=(64, 64), amplitude=40.0, smoothness=4.0)


def test_endpoint_error_in_a_region():
    truth = np.zeros((1, 8, 8, 2), np.float32)
    estimate = truth.copy()
    estimate[0, :4, :, 0] = 3.0
    mask = np.zeros((1, 8, 8), bool)
    mask[0, :4] = True
    assert endpoint_error(estimate, truth, mask=mask) == pytest.approx(3.0)
    assert endpoint_error(estimate, truth, mask=~mask) == pytest.approx(0.0)
    assert endpoint_error(estimate, truth) == pytest.approx(1.5)
    assert np.isnan(endpoint_error(estimate, truth, mask=np.zeros_like(mask)))
