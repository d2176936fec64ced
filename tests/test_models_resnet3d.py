"""Video ResNets (R3D, MC3, R(2+1)D): parameter counts, the (2+1)D mid-channel rule, where each family
convolves in time, and a forward/backward pass at a small clip.

Counts are checked three ways: exactly against torchvision at depth 18 (shared/reference), exactly against
an analytic count written out here from the architecture description (every depth), and against the
parameter counts the SRTG chapter reports for its plain baselines (Stergiou 2021 Table 4.2, to 0.01M).
Models for counting are built on the meta device (no memory, no initialisation time).
"""

from __future__ import annotations

import pytest
import torch

from kinetoscope.models import create_model
from kinetoscope.models.resnet3d import Conv2Plus1D, VideoResNet, mid_channels

TORCHVISION_PARAMS = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325}
# Plain-baseline parameter counts in millions, 400 classes (Stergiou 2021 Table 4.2).
REPORTED_MILLIONS = {
    "r3d_34": 63.68,
    "r3d_50": 36.72,
    "r3d_101": 69.06,
    "r2plus1d_34": 61.83,
    "r2plus1d_50": 34.86,
    "r2plus1d_101": 67.22,
}
ALL_NAMES = [
    "r3d_18", "r3d_34", "r3d_50", "r3d_101", "mc3_18", "mc3_34",
    "r2plus1d_18", "r2plus1d_34", "r2plus1d_50", "r2plus1d_101",
]  # fmt: skip


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_meta(name: str, **options) -> VideoResNet:
    with torch.device("meta"):
        return create_model(name, num_classes=options.pop("num_classes", 400), **options)


def analytic_count(name: str, num_classes: int = 400, in_channels: int = 3, expansion: int = 1) -> int:
    """Parameters of ``name`` from the architecture description alone (Tran et al. 2018, torchvision)."""
    family, depth = name.rsplit("_", 1)
    depth = int(depth)
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    widths = (64, 128, 256, 512)

    def bn(c: int) -> int:
        return 2 * c

    def conv(cin: int, cout: int, stage: int, mid: int) -> int:
        if family == "r2plus1d":
            return cin * mid * 9 + bn(mid) + mid * cout * 3
        if family == "mc3" and stage > 0:
            return cin * cout * 9
        return cin * cout * 27

    if family == "r2plus1d":
        total = in_channels * 45 * 49 + bn(45) + 45 * 64 * 3 + bn(64)
    else:
        total = in_channels * 64 * 3 * 49 + bn(64)
    cin = 64
    for stage, (n, w) in enumerate(zip(blocks, widths, strict=True)):
        out = w * (expansion if bottleneck else 1)
        for b in range(n):
            mid = (27 * cin * w) // (9 * cin + 3 * w)
            if bottleneck:
                total += cin * w + bn(w) + conv(w, w, stage, mid) + bn(w) + w * out + bn(out)
            else:
                total += conv(cin, w, stage, mid) + bn(w) + conv(w, w, stage, mid) + bn(w)
            if b == 0 and (stage > 0 or cin != out):
                total += cin * out + bn(out)
            cin = out
    return total + cin * num_classes + num_classes


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_depth_18_models_have_exactly_torchvisions_parameter_count(name: str) -> None:
    assert count_params(build_meta(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_depth_matches_the_analytic_parameter_count(name: str) -> None:
    assert count_params(build_meta(name)) == analytic_count(name)
    assert count_params(build_meta(name, num_classes=7, in_channels=2)) == analytic_count(name, 7, 2)


@pytest.mark.parametrize("name", sorted(REPORTED_MILLIONS))
def test_deep_models_match_the_parameter_counts_the_srtg_chapter_reports(name: str) -> None:
    assert count_params(build_meta(name)) / 1e6 == pytest.approx(REPORTED_MILLIONS[name], abs=0.005)


@pytest.mark.parametrize("name", ["r3d_50", "r2plus1d_101"])
def test_bottleneck_expansion_4_gives_torchvisions_generic_bottleneck_layout(name: str) -> None:
    model = build_meta(name, bottleneck_expansion=4)
    assert model.fc.in_features == 2048
    assert count_params(model) == analytic_count(name, expansion=4)


def test_basic_block_models_refuse_a_bottleneck_expansion() -> None:
    with pytest.raises(ValueError, match="no option"):
        create_model("r3d_18", num_classes=4, bottleneck_expansion=4)


def test_mid_channel_rule_is_the_largest_width_within_the_3d_conv_budget() -> None:
    # Tran et al. §3.5: M is chosen so that the (2+1)D block has (at most) the parameters of the 3x3x3 conv.
    for cin in (3, 16, 64, 128, 256, 512):
        for cout in (16, 64, 128, 256, 512):
            m = mid_channels(cin, cout)
            budget = 27 * cin * cout
            assert 9 * cin * m + 3 * m * cout <= budget < 9 * cin * (m + 1) + 3 * (m + 1) * cout
    # The widths torchvision's r2plus1d_18 uses (shared/reference).
    assert [mid_channels(64, 64), mid_channels(64, 128), mid_channels(128, 128)] == [144, 230, 288]
    assert [mid_channels(128, 256), mid_channels(256, 256), mid_channels(256, 512)] == [460, 576, 921]


def test_mc3_convolves_in_time_only_in_its_first_stage() -> None:
    model = build_meta("mc3_18")
    for stage in range(1, 5):
        temporal_extents = {
            m.kernel_size[0]
            for n, m in model.get_submodule(f"layer{stage}").named_modules()
            if isinstance(m, torch.nn.Conv3d) and "downsample" not in n
        }
        assert temporal_extents == ({3} if stage == 1 else {1})


def test_r2plus1d_factorises_every_block_conv_into_spatial_then_temporal() -> None:
    model = build_meta("r2plus1d_18")
    factorised = [m for m in model.modules() if isinstance(m, Conv2Plus1D)]
    assert len(factorised) == 1 + 2 * 8  # stem + two per basic block
    for conv in factorised:
        assert conv.spatial.kernel_size[0] == 1 and conv.temporal.kernel_size[1:] == (1, 1)


@pytest.fixture(scope="module")
def small_models() -> dict[str, VideoResNet]:
    torch.manual_seed(0)
    return {name: create_model(name, num_classes=5) for name in ("r3d_18", "mc3_18", "r2plus1d_18")}


@pytest.mark.parametrize(("name", "time_out"), [("r3d_18", 1), ("mc3_18", 8), ("r2plus1d_18", 1)])
def test_forward_backward_and_temporal_downsampling(small_models, name: str, time_out: int) -> None:
    # R3D and R(2+1)D stride time by 2 in stages 2-4 (8 -> 1); MC3's 2D stages stride space only (8 -> 8).
    model = small_models[name].train()
    clip = torch.randn(2, 3, 8, 32, 32)
    features = model.features(clip)
    assert features.shape == (2, 512, time_out, 2, 2)
    logits = model(clip)
    assert logits.shape == (2, 5)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.explain_layer == "layer4" and model.streams == ("rgb",) and model.per_frame is False
    model.zero_grad(set_to_none=True)


def test_dropout_option_sits_before_the_classifier() -> None:
    model = build_meta("r2plus1d_18", dropout=0.3)
    assert model.dropout.p == 0.3


@pytest.mark.parametrize("name", ["r3d_18", "x3d_xs"])
def test_initialisation_is_he_fan_out_with_unit_bn_and_a_small_normal_classifier(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv3d) and m.weight.numel() > 10_000)
    fan_out = conv.out_channels // conv.groups * conv.weight[0, 0].numel()
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
    assert model.fc.weight.std().item() == pytest.approx(0.01, rel=0.2) and bool((model.fc.bias == 0).all())
