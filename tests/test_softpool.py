"""SoftPool (Stergiou 2021 Eq. 5.5): the formula on hand-computed windows, exact gradients (float64 gradcheck),
the two limits (max-pool as the input is scaled up, avg-pool on constant windows), stability at extreme
scales, fp32 under autocast, and ordinary pooling geometry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from kinetoscope.layers import SoftPool1d, SoftPool2d, SoftPool3d, soft_pool1d, soft_pool2d, soft_pool3d


def reference_soft_pool(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...]) -> torch.Tensor:
    """Eq. 5.5 window by window, in float64 with Python loops (slow, obviously correct)."""
    dims = len(kernel)
    spatial = x.shape[-dims:]
    outs = [(d - k) // s + 1 for d, k, s in zip(spatial, kernel, stride, strict=True)]
    result = torch.empty(*x.shape[:-dims], *outs, dtype=torch.float64)
    for position in itertools.product(*(range(o) for o in outs)):
        window = x[(...,) + tuple(slice(p * s, p * s + k) for p, k, s in zip(position, kernel, stride, strict=True))]
        window = window.double().flatten(-dims)
        weights = torch.softmax(window, dim=-1)  # e^{a_i} / sum_j e^{a_j}, shift-invariant
        result[(...,) + position] = (weights * window).sum(-1)
    return result


def test_one_dimensional_window_matches_hand_computation() -> None:
    x = torch.tensor([[[1.0, 2.0, 0.0, 0.0]]])
    expected_first = (1 * math.e + 2 * math.e**2) / (math.e + math.e**2)  # (1 + 2e) / (1 + e)
    out = soft_pool1d(x, 2)
    assert out.shape == (1, 1, 2)
    assert out[0, 0, 0].item() == pytest.approx(expected_first, rel=1e-6)
    assert out[0, 0, 1].item() == pytest.approx(0.0, abs=1e-7)


def test_two_by_two_window_matches_hand_computation() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    weights = [math.exp(v) for v in (0, 1, 2, 3)]
    expected = sum(w * v for w, v in zip(weights, (0, 1, 2, 3), strict=True)) / sum(weights)
    assert soft_pool2d(x, 2).item() == pytest.approx(expected, rel=1e-6)  # 2.5752...
    assert 1.5 < expected < 3.0  # between the window mean and max


@pytest.mark.parametrize(
    ("shape", "kernel", "stride"),
    [
        ((2, 3, 4, 6, 6), (1, 2, 2), (1, 2, 2)),  # MTConv's spatial SoftPool
        ((2, 3, 5, 7, 9), (2, 2, 2), (2, 2, 2)),  # sizes not divisible: trailing rows dropped
        ((1, 2, 5, 6, 7), (2, 3, 2), (1, 2, 1)),  # overlapping windows (unfold path)
    ],
)
def test_three_dimensional_matches_the_window_by_window_formula(shape, kernel, stride) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape) * 3
    out = soft_pool3d(x, kernel, stride)
    expected = reference_soft_pool(x, kernel, stride)
    assert out.shape == expected.shape  # floor((D - k) / s) + 1, no padding
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_stride_defaults_to_kernel_and_modules_match_functions() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(SoftPool1d(2)(x), soft_pool1d(x, 2, 2))
    x2 = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(SoftPool2d(3, 1)(x2), soft_pool2d(x2, 3, 1))
    x3 = torch.randn(1, 2, 4, 4, 4)
    assert SoftPool3d((1, 2, 2))(x3).shape == (1, 2, 4, 2, 2)


@pytest.mark.parametrize(("kernel", "stride"), [((1, 2, 2), None), ((2, 2, 2), None), ((2, 3, 2), (1, 2, 1))])
def test_gradcheck_in_double_precision(kernel, stride) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: soft_pool3d(t, kernel, stride), (x,))
    y = (torch.randn(1, 2, 2, 5, 4, dtype=torch.float64) * 400).requires_grad_()  # exp overflows: max-shift path
    assert torch.autograd.gradcheck(lambda t: soft_pool3d(t, kernel, stride), (y,))


@pytest.mark.parametrize(("kernel", "stride"), [((1, 2, 2), None), ((2, 3, 2), (1, 2, 1))])
def test_weights_gradient_passes_grad_times_softmax_weights(kernel, stride) -> None:
    """``grad="weights"`` is the author's CUDA backward: d out / d a_i = w_i (not w_i (1 + a_i - out))."""
    torch.manual_seed(3)
    x = torch.randn(1, 1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    soft_pool3d(x, kernel, stride, grad="weights").sum().backward()
    expected = torch.zeros_like(x)
    k, s = kernel, stride or kernel
    outs = [(d - kk) // ss + 1 for d, kk, ss in zip(x.shape[2:], k, s, strict=True)]
    for p in itertools.product(*(range(o) for o in outs)):
        index = (0, 0) + tuple(slice(pi * si, pi * si + ki) for pi, ki, si in zip(p, k, s, strict=True))
        window = x.detach()[index]
        expected[index] += torch.softmax(window.flatten(), 0).view_as(window)
    torch.testing.assert_close(x.grad, expected)
    forward_autograd = soft_pool3d(x.detach(), kernel, stride)
    torch.testing.assert_close(soft_pool3d(x.detach(), kernel, stride, grad="weights"), forward_autograd)


def test_tends_to_max_pool_as_the_input_is_scaled_up() -> None:
    torch.manual_seed(4)
    x = torch.randn(2, 3, 4, 8, 8)
    target = F.max_pool3d(x, (1, 2, 2))
    errors = [(soft_pool3d(x * scale, (1, 2, 2)) / scale - target).abs().max().item() for scale in (1, 10, 100, 1000)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 1e-3
    assert errors[0] > 0.05  # at scale 1 it is genuinely between mean and max


def test_equals_average_pool_on_constant_windows() -> None:
    torch.manual_seed(5)
    values = torch.randn(2, 3, 4, 3, 3) * 5
    x = values.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # every 1x2x2 window constant
    torch.testing.assert_close(soft_pool3d(x, (1, 2, 2)), F.avg_pool3d(x, (1, 2, 2)))
    torch.testing.assert_close(soft_pool3d(x, (1, 2, 2)), values)


def test_extreme_scales_stay_finite_and_exact() -> None:
    """Inputs ~1e4 overflow a naive exp; windows far below the slice max (1e4 vs -1e4) underflow against a
    per-slice shift — the per-window max fallback keeps them exact."""
    torch.manual_seed(6)
    x = torch.randn(2, 2, 3, 8, 8) * 1e4
    x[:, :, :, :4] -= 3e4  # half of every frame sits ~3e4 below the other half
    out = soft_pool3d(x, (1, 2, 2))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.max_pool3d(x, (1, 2, 2)), rtol=1e-6, atol=1e-2)
    x.requires_grad_()
    soft_pool3d(x, (1, 2, 2)).sum().backward()
    assert torch.isfinite(x.grad).all()
    small = torch.tensor([[[[-1e4, -1e4 + 1.0], [-1e4, -1e4]]]], dtype=torch.float64)
    expected = -1e4 + math.e / (3 + math.e)  # exp(-1e4) underflows even in float64; the shift removes it
    assert soft_pool2d(small, 2).item() == pytest.approx(expected, rel=1e-12)


def test_computes_in_fp32_under_autocast() -> None:
    x = torch.randn(1, 2, 2, 4, 4).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = soft_pool3d(x, (1, 2, 2))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, soft_pool3d(x.float(), (1, 2, 2)))


def test_rejects_bad_arguments_with_the_value_at_fault() -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        soft_pool3d(torch.randn(1, 1, 1, 2, 2), (1, 3, 3))
    with pytest.raises(ValueError, match="grad"):
        soft_pool2d(torch.randn(1, 1, 2, 2), 2, grad="cuda")
    with pytest.raises(ValueError, match="dimensions"):
        soft_pool3d(torch.randn(4, 4), 2)
