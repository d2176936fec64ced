"""E2S-X3D (Ilic 2024 Ch. 4): X3D-M on RGB + X3D-S on flow, late fusion by concatenation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kinetoscope.models import create_model
from kinetoscope.models.e2s_x3d import resample_flow


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 4, 32, 32, generator=g), torch.randn(2, 2, 4, 32, 32, generator=g)


def build(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("e2s_x3d", num_classes=3, **options).eval()


def test_streams_are_x3d_m_on_rgb_and_x3d_s_on_flow() -> None:
    model = build()
    assert model.rgb.default_input == (3, 16, 224, 224) and model.rgb.sampling_stride == 5
    assert model.flow.default_input == (2, 13, 160, 160) and model.flow.sampling_stride == 6
    assert [len(model.rgb.get_submodule(f"layer{i}")) for i in range(1, 5)] == [3, 5, 11, 7]
    assert model.flow.stem.spatial.in_channels == 2


def test_output_is_a_linear_layer_on_the_concatenated_flow_and_rgb_logits() -> None:
    model = build()
    rgb, flow = inputs()
    with torch.no_grad():
        expected = model.fuse(torch.cat([model.flow(flow), model.rgb(rgb)], dim=1))
        torch.testing.assert_close(model(rgb, flow), expected)
        assert model.fuse.in_features == 6  # 2K
        model.fuse.weight[:, 3:] = 0  # silence the rgb half of the fusion layer ...
        _, other_rgb = None, inputs(seed=1)[0]
        torch.testing.assert_close(model(other_rgb, flow), model(rgb, flow))  # ... and rgb no longer matters


def test_feature_fusion_concatenates_the_two_2048_d_head_features() -> None:
    model = build(fusion_input="features")
    assert model.fuse.in_features == 4096
    rgb, flow = inputs()
    with torch.no_grad():
        expected = model.fuse(torch.cat([model.flow(flow), model.rgb(rgb)], dim=1))
        torch.testing.assert_close(model(rgb, flow), expected)


def test_parameter_count_is_both_x3d_streams_plus_the_fusion_layer() -> None:
    with torch.device("meta"):
        model = create_model("e2s_x3d", num_classes=101)
        x3d_m = create_model("x3d_m", num_classes=101)
    conv1_difference = 24 * 1 * 3 * 3  # X3D-S stem on 2 instead of 3 channels
    expected = 2 * sum(p.numel() for p in x3d_m.parameters()) - conv1_difference + (2 * 101 * 101 + 101)
    assert sum(p.numel() for p in model.parameters()) == expected == 6_383_533


def test_flow_resampling_picks_uniform_frames_and_rescales_the_vectors_with_the_image() -> None:
    flow = torch.zeros(1, 2, 16, 32, 64)
    flow[:, 0] = 4.0  # u: 4 px to the right
    flow[:, 1] = 2.0  # v: 2 px down
    flow[:, 0, :, 0, 0] += torch.arange(16.0)  # mark frames
    out = resample_flow(flow, 13, 16)
    assert out.shape == (1, 2, 13, 16, 16)
    torch.testing.assert_close(out[0, 0, :, 8, 8], torch.full((13,), 4.0 * 16 / 64))
    torch.testing.assert_close(out[0, 1, :, 8, 8], torch.full((13,), 2.0 * 16 / 32))
    picked = resample_flow(flow, 13, None)[0, 0, :, 0, 0] - 4.0
    assert picked.tolist() == torch.linspace(0, 15, 13).round().tolist()


def test_e2s_x3d_is_registered_and_trains_for_a_step() -> None:
    model = build(flow_frames=3, flow_size=48).train()
    assert model.streams == ("rgb", "flow") and model.per_frame is False and model.flow_channels == 2
    model.get_submodule(model.explain_layer)
    rgb, flow = inputs()
    loss = F.cross_entropy(model(rgb, flow), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.optim.Adam(model.parameters(), lr=3e-4).step()  # the thesis's optimiser and learning rate
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    grads = [n for n, p in model.named_parameters() if p.grad.abs().sum() > 0]
    assert changed == grads and len(changed) > 0.9 * len(before)  # every parameter with a gradient moved
    # both streams learn: the step moved parameters of the RGB and of the flow tower
    assert any("flow" in n for n in changed) and any("flow" not in n for n in changed)
