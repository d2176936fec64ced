"""Spatiotemporal multiplier networks (Feichtenhofer 2017 Ch. 5): multiplicative gates, identity temporal filters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kinetoscope.layers import IdentityTemporalConv
from kinetoscope.models import create_model
from kinetoscope.models.twostream import pre_activation


def clip(t: int = 4, seed: int = 0, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, t, 32, 32, generator=g), torch.randn(batch, 2, t, 32, 32, generator=g)


def build(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("st_multiplier", num_classes=3, flow_frames=1, **options).eval()


def test_at_initialisation_the_network_equals_its_frame_wise_counterpart() -> None:
    model = build(temporal_pool="none")
    frame_wise = build(temporal_pool="none", placement="none")
    missing, unexpected = frame_wise.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected  # only the temporal filters are extra
    rgb, flow = clip()
    with torch.no_grad():
        logits = model(rgb, flow)  # [B, T, K]
        # each chunk alone through the same network ...
        alone = torch.cat([model(rgb[:, :, t : t + 1], flow[:, :, t : t + 1]) for t in range(4)], dim=1)
        # ... and the network without temporal filters
        torch.testing.assert_close(logits, alone, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(logits, frame_wise(rgb, flow), rtol=1e-4, atol=1e-5)


def test_averaging_temporal_filters_mix_chunks_while_identity_filters_do_not() -> None:
    averaging = build(temporal_pool="none", temporal_init="average")
    rgb, flow = clip()
    with torch.no_grad():
        logits = averaging(rgb, flow)
        alone = torch.cat([averaging(rgb[:, :, t : t + 1], flow[:, :, t : t + 1]) for t in range(4)], dim=1)
    assert not torch.allclose(logits, alone, rtol=1e-3, atol=1e-4)
    filters = [m for m in averaging.modules() if isinstance(m, IdentityTemporalConv)]
    assert len(filters) == 8  # ‡: second unit of each of 4 stages, both streams
    w = filters[0].weight
    assert torch.allclose(w[0, 0, :, 0, 0], torch.full((3,), 1 / 3)) and w[0, 1].abs().sum() == 0


def test_gate_multiplies_appearance_pre_activation_by_rectified_motion() -> None:
    model = build()
    captured: dict[str, torch.Tensor] = {}
    app, mot = model.appearance.layer3, model.motion.layer3
    hooks = [
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
    torch.testing.assert_close(captured["branch"], pa * captured["xm"])  # Eq. 5.3: xa ⊙ f(xm)
    # zero motion closes the gate: the residual branch of the appearance unit then sees only zeros
    assert (captured["xm"] == 0).any()


def test_global_temporal_max_pool_takes_the_max_over_chunk_features() -> None:
    model = build()  # default: global temporal max pool
    rgb, flow = clip()
    with torch.no_grad():
        xa, xm = model.features(rgb, flow)
        fa = xa.mean(dim=(3, 4)).amax(dim=2)
        fm = xm.mean(dim=(3, 4)).amax(dim=2)
        expected = (model.appearance.fc(fa) + model.motion.fc(fm)) / 2
        torch.testing.assert_close(model(rgb, flow), expected)
    assert model.per_frame is False


def test_parameter_counts_of_the_ablation_and_final_layouts() -> None:
    with torch.device("meta"):
        ablation = create_model("st_multiplier", num_classes=101)
        final = create_model("st_multiplier", num_classes=101, motion_depth=152)
    identity_filters = 3 * (64**2 + 128**2 + 256**2 + 512**2) + (64 + 128 + 256 + 512)
    expected_ablation = 2 * 23_714_981 + 64 * 49 * 17 + 2 * identity_filters
    assert sum(p.numel() for p in ablation.parameters()) == expected_ablation
    resnet152_101 = 60_192_808 - 2049 * 1000 + 2049 * 101  # torchvision resnet152: 60,192,808 at 1000 classes
    expected = 23_714_981 + resnet152_101 + 64 * 49 * 17 + 2 * identity_filters
    assert sum(p.numel() for p in final.parameters()) == expected


@pytest.mark.parametrize("placement", ["after_3x3", "shortcut", "conv5"])
def test_st_multiplier_placements_train_for_a_step(placement: str) -> None:
    model = build(placement=placement).train()
    assert model.streams == ("rgb", "flow")
    model.get_submodule(model.explain_layer)
    rgb, flow = clip()
    loss = F.cross_entropy(model(rgb, flow), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.optim.SGD(model.parameters(), lr=1e-3).step()
