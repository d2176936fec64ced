"""T-ResNet (Feichtenhofer 2017 Ch. 7): temporal residual units with scale S = 0.01, global temporal max pool."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kinetoscope.models import create_model
from kinetoscope.models.t_resnet import ChannelScale, TemporalBottleneck
from kinetoscope.models.twostream import FrameResNet, stage_blocks


def clip(t: int = 4, seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, t, 32, 32, generator=torch.Generator().manual_seed(seed))


def build(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("t_resnet", num_classes=3, **options).eval()


def test_first_and_third_unit_of_each_stage_are_temporal_with_scale_initialised_to_0_01() -> None:
    model = build()
    for stage in stage_blocks(model.backbone):
        kinds = [isinstance(block, TemporalBottleneck) for block in stage]
        assert kinds[0] and kinds[2] and not kinds[1] and not any(kinds[3:])
        unit = stage[0]
        assert unit.temporal.kernel_size == (3, 1, 1) and unit.temporal.padding == (1, 0, 0)
        assert unit.temporal.in_channels == unit.temporal.out_channels == unit.conv1.out_channels
        assert torch.all(unit.scale.weight == 0.01) and torch.all(unit.scale.bias == 0)
        assert torch.all(unit.temporal.bias == 0) and unit.temporal.weight.abs().sum() > 0  # random weights


def test_with_zero_scale_it_is_the_frame_wise_resnet_with_a_temporal_max_pool() -> None:
    model = build(scale_init=0.0)
    reference = FrameResNet(50, num_classes=3).eval()
    missing, unexpected = reference.load_state_dict(model.backbone.state_dict(), strict=False)
    assert not missing and all(".temporal." in k or ".scale." in k for k in unexpected)
    x = clip()
    with torch.no_grad():
        per_frame = reference.run_stages(x).mean(dim=(3, 4))  # [B, 2048, T]
        expected = reference.fc(per_frame.amax(dim=2))  # Eq. 7.7: max over time
        torch.testing.assert_close(model(x), expected, rtol=1e-4, atol=1e-5)


def test_temporal_units_let_neighbouring_frames_interact_only_through_the_scaled_path() -> None:
    x = clip(t=5, batch=1)
    changed = x.clone()
    changed[:, :, 0] = torch.randn_like(x[:, :, 0])  # perturb the first frame only
    for scale, interacts in ((0.0, False), (0.01, True)):
        model = build(scale_init=scale)
        with torch.no_grad():
            a = model.backbone.run_stages(x)
            b = model.backbone.run_stages(changed)
        untouched = torch.equal(a[:, :, 1:], b[:, :, 1:])  # features of frames 1..4
        assert untouched != interacts


def test_channel_scale_is_a_channelwise_affine() -> None:
    scale = ChannelScale(3)
    with torch.no_grad():
        scale.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        scale.bias.copy_(torch.tensor([0.0, 1.0, 0.0]))
    out = scale(torch.ones(1, 3, 2, 1, 1))
    assert out[0, :, 0, 0, 0].tolist() == [1.0, 3.0, 3.0]


def test_parameter_count() -> None:
    with torch.device("meta"):
        model = create_model("t_resnet", num_classes=101)
    per_unit_width = [64, 128, 256, 512]
    temporal = sum(3 * c * c + c for c in per_unit_width)  # 1x1x3 C x C filters + biases
    scales = sum(2 * c for c in per_unit_width)
    expected = 23_714_981 + 2 * (temporal + scales)
    assert sum(p.numel() for p in model.parameters()) == expected == 25_809_701


def test_t_resnet_is_registered_and_trains_for_a_step() -> None:
    model = build().train()
    assert model.streams == ("rgb",) and model.per_frame is False
    model.get_submodule(model.explain_layer)
    assert model.default_input[1] == 16
    loss = F.cross_entropy(model(clip()), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    scales = [m.scale.weight for m in model.modules() if isinstance(m, TemporalBottleneck)]
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in scales)
    torch.optim.SGD(model.parameters(), lr=1e-2).step()
    assert not torch.all(scales[0] == 0.01)
