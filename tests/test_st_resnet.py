"""ST-ResNet (Feichtenhofer 2017 Ch. 4): additive motion -> appearance residuals, w/T' temporal filters, sub-batch
BatchNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kinetoscope.layers import SubBatchNorm3d
from kinetoscope.models import create_model
from kinetoscope.models.st_resnet import CrossStreamResNet
from kinetoscope.models.twostream import FrameResNet, pre_activation, stage_blocks


def clip(t: int = 4, seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, t, 32, 32, generator=g), torch.randn(batch, 2, t, 32, 32, generator=g)


def test_parameter_count_is_two_resnet50s_plus_20_channel_conv1_plus_temporal_filters() -> None:
    with torch.device("meta"):
        model = create_model("st_resnet", num_classes=101)
    resnet50 = 23_714_981  # 2D ResNet-50 at 101 classes
    temporal = 2 * (256 * 64 + 512 * 128 + 1024 * 256 + 2048 * 512)  # two 1x1 convs per stage, now 3 taps
    expected = 2 * resnet50 + 64 * 49 * 17 + 2 * 2 * temporal
    assert sum(p.numel() for p in model.parameters()) == expected == 58_624_394


def test_temporal_filters_are_the_2d_filters_divided_by_three_in_the_second_unit_of_each_stage() -> None:
    torch.manual_seed(0)
    model = create_model("st_resnet", num_classes=5, flow_frames=1)
    torch.manual_seed(0)
    reference = FrameResNet(50, num_classes=5, in_channels=3)  # same RNG stream as the appearance tower
    for stage, ref_stage in zip(stage_blocks(model.appearance), stage_blocks(reference), strict=True):
        unit, ref = stage[1], ref_stage[1]
        for name in ("conv1", "conv3"):
            w = getattr(unit, name).weight
            assert w.shape[2:] == (3, 1, 1)
            for t in range(3):
                torch.testing.assert_close(w[:, :, t], getattr(ref, name).weight[:, :, 0] / 3)
        assert stage[0].conv1.weight.shape[2] == 1  # the other units stay frame-wise
        assert stage[2].conv3.weight.shape[2] == 1


def test_motion_feeds_the_appearance_residual_branch_and_not_the_reverse() -> None:
    model = create_model("st_resnet", num_classes=3, flow_frames=1, temporal_pool="none").eval()
    rgb, flow = clip()
    other_rgb, other_flow = clip(seed=1)
    with torch.no_grad():
        base = model.forward_towers(rgb, flow)
        new_flow = model.forward_towers(rgb, other_flow)
        new_rgb = model.forward_towers(other_rgb, flow)
    assert not torch.allclose(new_flow["appearance"], base["appearance"])  # motion -> appearance
    torch.testing.assert_close(new_rgb["motion"], base["motion"])  # appearance does not reach motion


def test_second_unit_receives_appearance_plus_rectified_motion_per_eq_4_2() -> None:
    model = create_model("st_resnet", num_classes=3, flow_frames=1, bn_sub_batch=None).eval()
    captured: dict[str, torch.Tensor] = {}
    app, mot = model.appearance.layer2, model.motion.layer2
    hooks = [  # the appearance unit a is run through pre_activation, so its input is taken at its conv1
        app[0].conv1.register_forward_pre_hook(lambda _m, args: captured.__setitem__("xa_in", args[0])),
        mot[0].register_forward_hook(lambda _m, _a, out: captured.__setitem__("xm", out.clone())),
        app[1].conv1.register_forward_pre_hook(lambda _m, args: captured.__setitem__("branch", args[0])),
    ]
    rgb, flow = clip()
    with torch.no_grad():
        model(rgb, flow)
        pa = pre_activation(app[0], captured["xa_in"])
    for h in hooks:
        h.remove()
    assert (captured["xm"] >= 0).all()  # f(xm): the motion unit's ReLU output
    torch.testing.assert_close(captured["branch"], pa + captured["xm"])


def test_every_batchnorm_uses_sub_batches_of_four() -> None:
    model = create_model("st_resnet", num_classes=3, flow_frames=1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert norms and all(isinstance(m, SubBatchNorm3d) and m.sub_batch == 4 for m in norms)


def test_st_resnet_star_max_pools_11_chunks_to_4_positions_and_st_resnet_keeps_one_per_chunk() -> None:
    star = create_model("st_resnet", num_classes=3, flow_frames=1).eval()
    per_chunk = create_model("st_resnet", num_classes=3, flow_frames=1, temporal_pool="none").eval()
    rgb, flow = clip(t=11, batch=1)
    with torch.no_grad():
        assert star(rgb, flow).shape == (1, 4, 3)  # Table 4.1 pool5: 1x1x4
        assert per_chunk(rgb[:, :, :5], flow[:, :, :5]).shape == (1, 5, 3)
    assert star.per_frame and per_chunk.per_frame
    assert create_model("st_resnet", num_classes=3, temporal_pool="global").per_frame is False


def test_st_resnet_is_registered_and_trains_for_a_step() -> None:
    torch.manual_seed(0)
    model = create_model("st_resnet", num_classes=3)  # L = 10: flow stacked from the 2-channel clip
    assert isinstance(model, CrossStreamResNet) and model.streams == ("rgb", "flow")
    assert model.flow_channels == 20
    model.get_submodule(model.explain_layer)
    rgb, flow = clip(batch=8)  # two sub-batches of 4 for BatchNorm
    logits = model(rgb, flow)
    labels = torch.arange(8) % 3
    loss = F.cross_entropy(logits.reshape(-1, 3), labels.repeat_interleave(logits.shape[1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9).step()
