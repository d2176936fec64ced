"""Optical flow: methods on sequences with known motion (EPE thresholds), pair matching, encodings,
stacks and colour-wheel pictures (Broomé 2022 §3.2; Feichtenhofer 2017 Ch. 3)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from kinetoscope.flow import (
    FlowSpec,
    centred,
    colour_wheel,
    compute_flow,
    decode,
    endpoint_error,
    flow_at_frames,
    flow_pairs,
    flow_to_rgb,
    jpeg_clip,
    match_times,
    minmax_uint8,
    smooth_texture,
    stack,
    stack_window,
    synthetic_motion,
    to_float16,
    video_flow,
    with_magnitude,
)
from kinetoscope.registry import FLOW_METHODS

MARGIN = 16
METHODS = {
    "farneback": ("farneback", {}),
    "tvl1": ("tvl1", {}),
    "dis-ultrafast": ("dis", {"preset": "ultrafast"}),
    "dis-fast": ("dis", {"preset": "fast"}),
    "dis-medium": ("dis", {"preset": "medium"}),
}
# measured at 128x128 (benchmarks/flow.py conditions): rotation/zoom EPE
#   farneback .063/.053, tvl1 .045/.046, ultrafast .204/.176, fast .131/.091, medium .052/.043
# thresholds ~2x the measurement
AFFINE_THRESHOLD = {
    "farneback": 0.15,
    "tvl1": 0.12,
    "dis-ultrafast": 0.4,
    "dis-fast": 0.3,
    "dis-medium": 0.12,
}


@pytest.fixture(scope="module")
def sequences() -> dict[str, object]:
    return {
        kind: synthetic_motion(kind, num_frames=3, size=(128, 128), shift=(2.5, -1.5), angle=2.0, scale=1.03)
        for kind in ("translation", "rotation", "zoom")
    }


def test_the_three_methods_are_registered() -> None:
    assert {"farneback", "tvl1", "dis"} <= set(FLOW_METHODS.names())
    assert FLOW_METHODS.options("farneback") == {
        "pyr_scale": 0.5,
        "levels": 3,
        "winsize": 15,
        "iterations": 3,
        "poly_n": 5,
        "poly_sigma": 1.2,
        "flags": 0,
    }


def test_unknown_method_error_lists_the_valid_ones() -> None:
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(KeyError, match="dis, farneback, raft, tvl1"):
        compute_flow(frames, method="pwcnet")


def test_unknown_option_error_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match="'window'.*winsize"):
        compute_flow(np.zeros((2, 16, 16, 3), np.uint8), method="farneback", window=9)
    with pytest.raises(ValueError, match="preset 'slow'"):
        compute_flow(np.zeros((2, 16, 16, 3), np.uint8), method="dis", preset="slow")


def test_compute_flow_shape_dtype_and_grayscale_inside(sequences) -> None:
    rgb = sequences["translation"].frames
    flow = compute_flow(rgb, method="farneback")
    assert flow.shape == (2, 128, 128, 2) and flow.dtype == np.float32
    gray = cv2.cvtColor(rgb[0], cv2.COLOR_RGB2GRAY)
    assert np.array_equal(
        compute_flow(np.stack([gray, cv2.cvtColor(rgb[1], cv2.COLOR_RGB2GRAY)])[..., None]), flow[:1]
    )


def test_compute_flow_rejects_wrong_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        compute_flow(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        compute_flow(np.zeros((1, 8, 8, 3), np.uint8))


@pytest.mark.parametrize("name", list(METHODS))
def test_translation_epe_below_0_3_px(sequences, name: str) -> None:
    method, options = METHODS[name]
    seq = sequences["translation"]
    frames = seq.frames if method != "tvl1" else seq.frames[:2]
    flow = compute_flow(frames, method, **options)
    assert endpoint_error(np.zeros_like(seq.flow[: len(flow)]), seq.flow[: len(flow)], MARGIN) > 2.9
    assert endpoint_error(flow, seq.flow[: len(flow)], margin=MARGIN) < 0.3
    assert np.allclose(flow[:, MARGIN:-MARGIN, MARGIN:-MARGIN].mean(axis=(0, 1, 2)), (2.5, -1.5), atol=0.1)


@pytest.mark.parametrize("kind", ["rotation", "zoom"])
@pytest.mark.parametrize("name", list(METHODS))
def test_rotation_and_zoom_epe_within_measured_thresholds(sequences, name: str, kind: str) -> None:
    method, options = METHODS[name]
    seq = sequences[kind]
    flow = compute_flow(seq.frames[:2], method, **options)
    assert endpoint_error(flow, seq.flow[:1], margin=MARGIN) < AFFINE_THRESHOLD[name]


def test_synthetic_translation_moves_content_by_the_true_flow() -> None:
    seq = synthetic_motion("translation", num_frames=2, size=(64, 64), shift=(3.0, -2.0))
    # content at (x, y) in frame 0 is at (x + 3, y - 2) in frame 1
    assert np.array_equal(seq.frames[1][10:50, 13:53], seq.frames[0][12:52, 10:50])
    assert np.allclose(seq.flow, (3.0, -2.0))


def test_synthetic_rotation_flow_is_the_analytic_rotation_field() -> None:
    seq = synthetic_motion("rotation", num_frames=2, size=(33, 33), angle=90.0)
    # a quarter turn about the centre (16, 16): (x, y) -> (16 - (y - 16), 16 + (x - 16))
    assert np.allclose(seq.flow[0, 16, 26], (-10.0, 10.0), atol=1e-4)  # point (26, 16) -> (16, 26)
    assert np.allclose(seq.flow[0, 16, 16], (0.0, 0.0), atol=1e-4)


def test_smooth_texture_is_in_unit_range_and_reproducible() -> None:
    a, b = smooth_texture(40, 50, seed=3), smooth_texture(40, 50, seed=3)
    assert a.shape == (40, 50) and a.min() == 0.0 and a.max() == 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, smooth_texture(40, 50, seed=4))


def _varying_translation(shifts: list[tuple[float, float]], size: int = 96) -> np.ndarray:
    """Frames of a texture whose step j -> j+1 moves by shifts[j]."""
    margin = 40
    base = smooth_texture(size + 2 * margin, size + 2 * margin, seed=1)
    offsets = np.cumsum([(0.0, 0.0), *shifts], axis=0)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for dx, dy in offsets:
        map_x, map_y = (xs - dx + margin).astype(np.float32), (ys - dy + margin).astype(np.float32)
        image = cv2.remap(base, map_x, map_y, cv2.INTER_CUBIC)
        frames.append(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)[..., None].repeat(3, -1))
    return np.stack(frames)


def test_flow_at_frames_uses_the_adjacent_pair_of_each_selected_frame() -> None:
    # 16 "fps" steps: the step leaving every 4th frame moves right by 3, all others down by 1
    shifts = [(3.0, 0.0) if j % 4 == 0 else (0.0, 1.0) for j in range(12)]
    frames = _varying_translation(shifts)
    inner = (slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    forward = flow_at_frames(frames, [0, 4, 8], method="dis", preset="medium")
    assert forward.shape == (3, 96, 96, 2)
    assert np.allclose(forward[inner].mean(axis=(1, 2)), [(3.0, 0.0)] * 3, atol=0.2)
    backward = flow_at_frames(frames, [0, 4, 8], method="dis", pair="backward", preset="medium")
    # frame 0 has no predecessor and takes (0, 1); the others get the step that arrived: (0, 1)
    assert np.allclose(backward[inner].mean(axis=(1, 2)), [(3.0, 0.0), (0.0, 1.0), (0.0, 1.0)], atol=0.2)


def test_flow_pairs_rules_at_the_ends() -> None:
    assert flow_pairs([0, 3, 4], 5, "forward") == [(0, 1), (3, 4), (3, 4)]
    assert flow_pairs([0, 3, 4], 5, "backward") == [(0, 1), (2, 3), (3, 4)]
    with pytest.raises(IndexError, match="outside the 5"):
        flow_pairs([5], 5)
    with pytest.raises(ValueError, match="'forward' or 'backward'"):
        flow_pairs([0], 5, "centre")


def test_match_times_maps_2fps_frames_to_every_8th_16fps_frame() -> None:
    rgb_times = np.arange(5) / 2.0
    high_times = np.arange(40) / 16.0
    assert match_times(rgb_times, high_times).tolist() == [0, 8, 16, 24, 32]
    # a time between two source frames takes the one on screen (the earlier)
    assert match_times(np.array([0.1, 10.0]), high_times).tolist() == [1, 39]


def test_video_flow_aligns_one_field_per_frame_with_magnitude() -> None:
    seq = synthetic_motion("translation", num_frames=4, size=(64, 64), shift=(1.0, 0.0))
    flow = video_flow(FlowSpec(method="farneback", magnitude=True), seq.frames)
    assert flow.shape == (4, 64, 64, 3)
    assert np.array_equal(flow[3], flow[2])  # the last frame reuses the last pair
    assert np.allclose(flow[..., 2], np.hypot(flow[..., 0], flow[..., 1]))
    single = video_flow(FlowSpec(method="dis"), seq.frames[:1])
    assert single.shape == (1, 64, 64, 2) and not single.any()


def test_flow_spec_parse_and_errors() -> None:
    assert FlowSpec.parse(True) == FlowSpec()
    assert FlowSpec.parse("dis").method == "dis"
    spec = FlowSpec.parse({"method": "farneback", "fps": 16, "magnitude": True})
    assert spec.fps == 16 and spec.channels == 3
    with pytest.raises(KeyError, match="valid flow methods"):
        FlowSpec.parse("brox")
    with pytest.raises(ValueError, match="unknown key.*'rate'"):
        FlowSpec.parse({"method": "dis", "rate": 16})
    with pytest.raises(ValueError, match="has no option"):
        FlowSpec(method="dis", options={"winsize": 3})


def test_jpeg_clip_formula_and_inverse_up_to_half_a_step() -> None:
    values = np.array([-25.0, -20.0, 0.0, 20.0, 25.0, 1.0], np.float32)
    q = jpeg_clip(values)
    assert q.dtype == np.uint8
    expected = np.clip(np.rint(255 * (values + 20) / 40), 0, 255)
    assert q.tolist() == expected.tolist() == [0, 0, 128, 255, 255, 134]
    flow = np.random.default_rng(0).uniform(-20, 20, (3, 16, 16, 2)).astype(np.float32)
    error = np.abs(decode(jpeg_clip(flow)) - flow).max()
    assert error <= 20 / 255 + 1e-5
    assert decode(jpeg_clip(np.float32([33.0, -50.0]))).tolist() == [20.0, -20.0]  # clipped at ±20 px
    assert centred(np.uint8([0, 128, 255])).tolist() == [-128.0, 0.0, 127.0]


def test_float16_round_trip_is_close() -> None:
    flow = np.random.default_rng(0).uniform(-15, 15, (2, 8, 8, 2)).astype(np.float32)
    stored = to_float16(flow)
    assert stored.dtype == np.float16 and np.abs(stored.astype(np.float32) - flow).max() < 0.01


def test_magnitude_is_the_third_channel() -> None:
    flow = np.zeros((1, 2, 2, 2), np.float32)
    flow[0, 0, 0] = (3.0, -4.0)
    out = with_magnitude(flow)
    assert out.shape == (1, 2, 2, 3) and out[0, 0, 0].tolist() == [3.0, -4.0, 5.0]


def test_minmax_scales_each_frame_to_0_255() -> None:
    flow = np.zeros((2, 4, 4, 3), np.float32)
    flow[0, ..., 0] = np.linspace(-2, 6, 16).reshape(4, 4)  # frame 0 spans [-2, 6] over all channels
    flow[1] = 7.0  # constant frame
    images = minmax_uint8(flow)
    assert images.dtype == np.uint8
    assert images[0].min() == 0 and images[0].max() == 255
    assert images[0, 0, 0, 1] == round(255 * 2 / 8)  # a 0 in channel v sits at (0 + 2) / 8 of the range
    assert not images[1].any()
    per_channel = minmax_uint8(flow, per_channel=True)
    assert per_channel[0, ..., 0].max() == 255 and not per_channel[0, ..., 1].any()


def test_stack_interleaves_u_and_v_of_l_fields() -> None:
    length = 4
    flow = np.zeros((1, 2, length, 3, 3), np.float32)
    for t in range(length):
        flow[0, 0, t], flow[0, 1, t] = 10 * t + 1, 10 * t + 2  # u_t, v_t
    interleaved = stack(flow)
    assert interleaved.shape == (1, 8, 3, 3)
    assert interleaved[0, :, 0, 0].tolist() == [1, 2, 11, 12, 21, 22, 31, 32]
    assert stack(flow, layout="grouped")[0, :, 0, 0].tolist() == [1, 11, 21, 31, 2, 12, 22, 32]
    assert torch.equal(stack(torch.from_numpy(flow)), torch.from_numpy(interleaved))


def test_stack_window_covers_t_minus_5_to_t_plus_4_clamped() -> None:
    sequence = np.zeros((12, 2, 2, 2), np.float32)
    sequence[..., 0] = np.arange(12)[:, None, None]
    window = stack_window(sequence, centre=6, length=10)
    assert window.shape == (2, 2, 20)
    assert window[0, 0, 0::2].tolist() == list(range(1, 11))
    assert stack_window(sequence, centre=0, length=10)[0, 0, 0::2].tolist() == [0] * 6 + [1, 2, 3, 4]


def test_colour_wheel_directions_and_brightness() -> None:
    flow = np.float32([[[1, 0], [-1, 0], [0, 0], [0.5, 0]]])  # right, left, still, half-speed right
    rgb = flow_to_rgb(flow)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, 0].tolist() == [255, 0, 0]  # right = red
    assert rgb[0, 1].tolist() == [0, 255, 255]  # left = cyan
    assert rgb[0, 2].tolist() == [0, 0, 0]  # still = black
    assert rgb[0, 3].max() in (127, 128)
    batch = flow_to_rgb(np.stack([flow, 2 * flow]))  # one scale for the whole sequence
    assert batch.shape == (2, 1, 4, 3) and batch[0, 0, 0].max() in (127, 128)
    wheel = colour_wheel(33)
    assert wheel.shape == (33, 33, 3) and wheel[16, 16].tolist() == [0, 0, 0]
    assert wheel[16, 32].tolist() == [255, 0, 0]
