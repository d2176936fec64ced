"""Two-stream fusion layers and the ``twostream`` network (Feichtenhofer 2017 Ch. 3)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.layers import (
    IdentityTemporalConv,
    SpatialFusion,
    SubBatchNorm3d,
    bilinear_pool,
    inflate_first_conv,
    inflate_temporal,
    interleave_channels,
    pool3d,
    stack_flow,
    use_sub_batch_norm,
)
from kinetoscope.models import create_model
from kinetoscope.models.twostream import FrameResNet


def maps(channels: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, channels, 3, 5, 5, generator=g), torch.rand(2, channels, 3, 5, 5, generator=g)


def test_concat_interleaves_channels_as_in_eq_3_3() -> None:
    xa = torch.arange(3.0).view(1, 3, 1, 1, 1) + 10  # appearance channels 10, 11, 12
    xb = torch.arange(3.0).view(1, 3, 1, 1, 1) + 20  # motion channels 20, 21, 22
    y = interleave_channels(xa, xb).flatten().tolist()
    # 1-based: y[2d] = xa[d], y[2d-1] = xb[d]
    assert y == [20, 10, 21, 11, 22, 12]
    assert SpatialFusion("concat", 3)(xa, xb).shape[1] == 6


def test_sum_and_max_fusion_follow_eq_3_1_and_3_2_and_max_routes_gradient_to_the_winner() -> None:
    xa, xb = maps()
    assert torch.equal(SpatialFusion("sum", 4)(xa, xb), xa + xb)
    xa.requires_grad_(True)
    xb.requires_grad_(True)
    y = SpatialFusion("max", 4)(xa, xb)
    assert torch.equal(y, torch.maximum(xa, xb))
    y.sum().backward()
    assert torch.equal(xa.grad, (xa > xb).float())
    assert torch.equal(xb.grad, (xb > xa).float())


def test_conv_fusion_is_initialised_as_sum_fusion() -> None:
    xa, xb = maps(8)  # non-negative, like ReLU outputs
    fusion = SpatialFusion("conv", 8)
    assert sum(p.numel() for p in fusion.parameters()) == 2 * 8 * 8 + 8  # 1x1x2C filters for C outputs + bias
    torch.testing.assert_close(fusion(xa, xb), xa + xb)
    # and it is a learnable layer: after a step it no longer equals the sum
    loss = (fusion(xa, xb) - 2 * xa).square().mean()
    loss.backward()
    with torch.no_grad():
        for p in fusion.parameters():
            p -= 0.5 * p.grad
    assert not torch.allclose(fusion(xa, xb), xa + xb)


def test_3d_conv_fusion_spreads_weighted_identities_over_a_normalised_gaussian() -> None:
    fusion = SpatialFusion("conv", 2, kernel=(3, 3, 3))
    w = fusion.conv.weight.detach()
    assert w.shape == (2, 4, 3, 3, 3)
    torch.testing.assert_close(w[0, 1].sum(), torch.tensor(0.25))  # appearance identity x 0.25
    torch.testing.assert_close(w[0, 0].sum(), torch.tensor(0.75))  # motion identity x 0.75 ("motion x3")
    assert w[0, 2:].abs().sum() == 0 and w[1, :2].abs().sum() == 0  # no cross-channel terms
    assert w[0, 1, 1, 1, 1] == w[0, 1].max()  # Gaussian centred in the kernel
    # On constant maps (away from the zero-padded border) the output is 0.25·xa + 0.75·xb.
    xa = torch.full((1, 2, 5, 5, 5), 2.0)
    xb = torch.full((1, 2, 5, 5, 5), 4.0)
    torch.testing.assert_close(fusion(xa, xb)[..., 2, 2, 2], torch.full((1, 2), 0.25 * 2 + 0.75 * 4))


def test_bilinear_fusion_sums_outer_products_over_locations_per_frame() -> None:
    xa, xb = maps(3)
    y = bilinear_pool(xa, xb, normalise=False)
    assert y.shape == (2, 9, 3)
    b, t = 1, 2
    expected = sum(torch.outer(xa[b, :, t, i, j], xb[b, :, t, i, j]) for i in range(5) for j in range(5))
    torch.testing.assert_close(y[b, :, t], expected.flatten())
    normalised = bilinear_pool(xa, xb)
    torch.testing.assert_close(normalised.norm(dim=1), torch.ones(2, 3))
    torch.testing.assert_close(normalised[b, :, t], F.normalize(expected.flatten().sqrt(), dim=0))


def test_stack_flow_interleaves_u_and_v_of_the_L_flows_around_each_step() -> None:
    t = 6
    flow = torch.zeros(1, 2, t, 1, 1)
    flow[0, 0, :, 0, 0] = torch.arange(t) * 1.0  # u = frame index
    flow[0, 1, :, 0, 0] = torch.arange(t) + 100.0  # v = 100 + frame index
    stacked = stack_flow(flow, 4)[0, :, :, 0, 0]  # [2L, T]
    assert stacked.shape == (8, t)
    # step 3 covers frames 1, 2, 3, 4 (t - L/2 ... t + L/2 - 1), channels u1 v1 u2 v2 ...
    assert stacked[:, 3].tolist() == [1, 101, 2, 102, 3, 103, 4, 104]
    # at the clip start the window is clamped to frame 0
    assert stacked[:, 0].tolist() == [0, 100, 0, 100, 0, 100, 1, 101]


def test_flow_conv1_from_rgb_filters_responds_to_a_grey_stack_like_rgb_to_the_grey_image() -> None:
    torch.manual_seed(0)
    rgb_conv = nn.Conv2d(3, 8, 7, padding=3, bias=False)
    grey = torch.rand(1, 1, 16, 16)
    flow_weight = inflate_first_conv(rgb_conv.weight.detach(), 20)
    assert flow_weight.shape == (8, 20, 7, 7)
    rgb_response = rgb_conv(grey.expand(1, 3, 16, 16))
    flow_response = F.conv2d(grey.expand(1, 20, 16, 16), flow_weight, padding=3)
    torch.testing.assert_close(flow_response, rgb_response, rtol=1e-4, atol=1e-5)
    replicated = inflate_first_conv(rgb_conv.weight.detach(), 6, mode="replicate", rescale=False)
    torch.testing.assert_close(replicated[:, 3:], rgb_conv.weight.detach())  # r, g, b, r, g, b


def test_inflated_temporal_filter_is_w_over_T_and_averages_over_time() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, 1, bias=False)
    temporal = inflate_temporal(conv, 3)
    assert temporal.kernel_size == (3, 1, 1) and temporal.padding == (1, 0, 0)
    for t in range(3):
        torch.testing.assert_close(temporal.weight[:, :, t], conv.weight[:, :, 0] / 3)
    constant = torch.rand(1, 4, 1, 3, 3).expand(1, 4, 5, 3, 3)
    out = temporal(constant)
    torch.testing.assert_close(out[:, :, 1:4], conv(constant)[:, :, 1:4])  # interior: the 1x1 response
    torch.testing.assert_close(out[:, :, 0], conv(constant)[:, :, 0] * 2 / 3)  # zero padding at the ends


def test_identity_temporal_conv_is_an_exact_no_op_or_a_moving_average() -> None:
    x = torch.randn(2, 5, 7, 3, 3)
    assert torch.equal(IdentityTemporalConv(5)(x), x)
    avg = IdentityTemporalConv(5, init="average")(x)
    torch.testing.assert_close(avg[:, :, 3], x[:, :, 2:5].mean(dim=2))


def test_sub_batch_norm_normalises_each_sub_batch_with_its_own_moments() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 2, 4, 4) + torch.tensor([0.0, 0, 5, 5]).view(4, 1, 1, 1, 1)
    bn = SubBatchNorm3d(3, sub_batch=2)
    out = bn(x)
    reference = nn.BatchNorm3d(3)
    expected = torch.cat([reference(x[:2]), reference(x[2:])])
    torch.testing.assert_close(out, expected)
    # running statistics: the average of the two groups' moments
    dims = (0, 2, 3, 4)
    means = torch.stack([x[:2].mean(dims), x[2:].mean(dims)]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * means)
    full = nn.BatchNorm3d(3)(x)
    assert not torch.allclose(out, full)  # differs from full-batch BN on this batch
    model = use_sub_batch_norm(nn.Sequential(nn.Conv3d(3, 3, 1), nn.BatchNorm3d(3)), 4)
    assert isinstance(model[1], SubBatchNorm3d) and model[1].sub_batch == 4


def test_pool3d_uses_the_code_kernel_and_clamps_to_short_clips() -> None:
    x = torch.randn(1, 2, 11, 8, 8, generator=torch.Generator().manual_seed(0))
    out = pool3d(x)
    assert out.shape == (1, 2, 4, 4, 4)
    # kernel 5 (time) x 2 x 2, stride 2: output (t, i, j) is the max of frames 2t..2t+4, rows 2i..2i+1
    for t, i, j in ((0, 0, 0), (3, 2, 1), (1, 3, 3)):
        window = x[0, :, 2 * t : 2 * t + 5, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        assert torch.equal(out[0, :, t, i, j], window.amax(dim=(1, 2, 3)))
    short = torch.randn(1, 2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    clamped = pool3d(short)  # a 3-frame clip: the temporal kernel shrinks to 3, one output step over all
    assert clamped.shape == (1, 2, 1, 4, 4)
    assert torch.equal(clamped[0, :, 0, 1, 2], short[0, :, :, 2:4, 4:6].amax(dim=(1, 2, 3)))


def test_frame_resnet50_has_the_2d_resnet50_parameter_count() -> None:
    with torch.device("meta"):
        model = FrameResNet(50, num_classes=1000, in_channels=3)
    assert sum(p.numel() for p in model.parameters()) == 25_557_032  # torchvision resnet50


def small_twostream(**options) -> nn.Module:
    torch.manual_seed(0)
    return create_model("twostream", num_classes=3, backbone="resnet18", flow_frames=2, **options)


def clip(seed: int = 0, t: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, t, 32, 32, generator=g), torch.randn(2, 2, t, 32, 32, generator=g)


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_conv_fused_network_initially_equals_the_sum_fused_network(layer: str) -> None:
    summed = small_twostream(fusion="sum", fusion_layer=layer, temporal_fusion="none").eval()
    conv = small_twostream(fusion="conv", fusion_layer=layer, temporal_fusion="none").eval()
    missing, unexpected = conv.load_state_dict(summed.state_dict(), strict=False)
    assert set(missing) == {"fusion.conv.weight", "fusion.conv.bias"} and not unexpected
    rgb, flow = clip()
    with torch.no_grad():
        torch.testing.assert_close(conv(rgb, flow), summed(rgb, flow))
        # the fused tower sees the motion stream: other flow, other fused scores
        towers = summed.forward_towers(rgb, flow)
        assert set(towers) == {"fusion", "motion"}
        assert not torch.allclose(summed.forward_towers(rgb, flow.flip(2))["fusion"], towers["fusion"])


def test_conv_fusion_adds_2C_squared_plus_C_parameters_and_concat_doubles_the_classifier_input() -> None:
    def count(**options) -> int:
        with torch.device("meta"):
            model = create_model("twostream", num_classes=101, temporal_fusion="none", **options)
        return sum(p.numel() for p in model.parameters())

    c = 2048  # ResNet-50 conv5 width
    assert count(fusion="conv") - count(fusion="sum") == 2 * c * c + c
    assert count(fusion="concat") - count(fusion="sum") == c * 101
    late = count(fusion="late")
    assert late == count(fusion="sum") == 2 * 23_714_981 + 64 * 49 * (20 - 3)  # two towers, 20-channel conv1


def test_motion_stream_accepts_a_2L_stack_or_a_2_channel_flow_clip() -> None:
    model = small_twostream(fusion="sum", temporal_fusion="pool3d").eval()
    rgb, flow = clip()
    with torch.no_grad():
        torch.testing.assert_close(model(rgb, flow), model(rgb, stack_flow(flow, 2)))
    with pytest.raises(ValueError, match="2 \\(u, v\\) or 2L = 4 channels"):
        model(rgb, torch.randn(2, 3, 4, 32, 32))


@pytest.mark.parametrize(
    "options",
    [
        {"fusion": "concat", "fusion_layer": "layer2", "temporal_fusion": "pool3d"},
        {"fusion": "bilinear", "temporal_fusion": "none"},
        {"fusion": "max", "fusion_layer": "layer3", "keep_motion_tower": False, "temporal_fusion": "none"},
        {"fusion": "conv", "temporal_fusion": "conv3d"},
    ],
)
def test_twostream_variants_train_for_a_step(options: dict) -> None:
    model = small_twostream(**options)
    assert model.streams == ("rgb", "flow") and model.per_frame is False
    model.get_submodule(model.explain_layer)
    rgb, flow = clip()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    loss = F.cross_entropy(model(rgb, flow), torch.tensor([0, 2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    optimiser.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
