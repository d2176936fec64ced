"""X3D (Feichtenhofer 2020, PyTorchVideo layout): parameter counts, the expansion rules of each variant,
squeeze-excitation placement, channelwise convs, clip metadata, and a forward/backward pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.models import create_model
from kinetoscope.models.x3d import X3D, X3D_VARIANTS, X3DBlock, round_width

PYTORCHVIDEO_PARAMS = {"x3d_xs": 3_794_274, "x3d_s": 3_794_274, "x3d_m": 3_794_274, "x3d_l": 6_153_384}


def build_meta(name: str, **options) -> X3D:
    with torch.device("meta"):
        return create_model(name, num_classes=options.pop("num_classes", 400), **options)


def blocks_of(model: X3D, stage: int) -> list[X3DBlock]:
    return list(model.get_submodule(f"layer{stage}"))


@pytest.mark.parametrize("name", sorted(PYTORCHVIDEO_PARAMS))
def test_parameter_count_equals_pytorchvideo(name: str) -> None:
    assert sum(p.numel() for p in build_meta(name).parameters()) == PYTORCHVIDEO_PARAMS[name]


def test_depth_factor_expands_the_base_stage_depths() -> None:
    # X3D §4: d = ceil(γ_d · (1, 2, 5, 3)); γ_d = 2.2 for XS/S/M, 5.0 for L.
    assert X3D_VARIANTS["s"].depths == (3, 5, 11, 7)
    assert X3D_VARIANTS["l"].depths == (5, 10, 25, 15)
    for name, depths in (("x3d_m", (3, 5, 11, 7)), ("x3d_l", (5, 10, 25, 15))):
        model = build_meta(name)
        assert tuple(len(blocks_of(model, s)) for s in range(1, 5)) == depths


def test_widths_follow_the_bottleneck_factor_and_convs_are_channelwise() -> None:
    model = build_meta("x3d_s")
    for stage, (inner, out) in enumerate(((54, 24), (108, 48), (216, 96), (432, 192)), start=1):
        for block in blocks_of(model, stage):
            assert block.conv_a.out_channels == inner == int(2.25 * out)
            assert block.conv_b.groups == inner and block.conv_b.kernel_size == (3, 3, 3)
            assert block.conv_c.out_channels == out
        assert blocks_of(model, stage)[0].conv_b.stride == (1, 2, 2)
    assert model.stem.temporal.groups == 24 and model.stem.temporal.kernel_size == (5, 1, 1)


def test_squeeze_excitation_sits_in_every_other_block_at_one_sixteenth_rounded_to_8() -> None:
    model = build_meta("x3d_l")
    for stage, reduced in zip(range(1, 5), (8, 8, 16, 32), strict=True):
        for index, block in enumerate(blocks_of(model, stage)):
            if index % 2 == 0:
                assert block.se is not None and block.se.reduce.out_channels == reduced
            else:
                assert block.se is None
    assert [round_width(c, 1 / 16) for c in (54, 108, 216, 432)] == [8, 8, 16, 32]


def test_shortcut_projection_has_bn_only_where_the_width_changes() -> None:
    model = build_meta("x3d_xs")
    first = [blocks_of(model, s)[0] for s in range(1, 5)]
    assert not hasattr(first[0].shortcut, "bn")  # stage 1: 24 -> 24, stride 2: conv only (PyTorchVideo)
    assert all(hasattr(block.shortcut, "bn") for block in first[1:])
    assert all(block.shortcut is None for s in range(1, 5) for block in blocks_of(model, s)[1:])


@pytest.mark.parametrize(
    ("name", "clip", "stride"),
    [("x3d_xs", (3, 4, 160, 160), 12), ("x3d_s", (3, 13, 160, 160), 6),
     ("x3d_m", (3, 16, 224, 224), 5), ("x3d_l", (3, 16, 312, 312), 5)],
)  # fmt: skip
def test_variants_carry_their_clip_length_crop_and_sampling_stride(name, clip, stride) -> None:
    model = build_meta(name)
    assert model.default_input == clip and model.sampling_stride == stride


def test_swish_option_switches_the_inner_activation() -> None:
    assert isinstance(blocks_of(build_meta("x3d_s"), 1)[0].act_b, nn.SiLU)
    assert isinstance(blocks_of(build_meta("x3d_s", swish=False), 1)[0].act_b, nn.ReLU)


def test_forward_backward_on_a_small_clip() -> None:
    # x3d_l differs only in depth; the shared smoke test (tests/test_models_smoke.py) runs every variant.
    torch.manual_seed(0)
    model = create_model("x3d_s", num_classes=4, in_channels=2).train()
    clip = torch.randn(2, 2, 4, 32, 32)
    assert model.features(clip).shape == (2, 192, 4, 1, 1)  # space / 32, time kept
    logits = model(clip)
    assert logits.shape == (2, 4)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.explain_layer == "layer4" and model.streams == ("rgb",) and model.per_frame is False


def test_global_head_pool_accepts_clips_other_than_the_default() -> None:
    model = create_model("x3d_xs", num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 6, 64, 96)).shape == (1, 3)
