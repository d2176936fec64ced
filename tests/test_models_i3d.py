"""Inception-v1 I3D of Mänttäri 2020 (Mänttäri 2020 §4.2; docs/deviations.md)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.models import create_model
from kinetoscope.models.i3d import I3D, InceptionModule, Unit3D


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_i3d_has_the_accv_parameter_count_at_174_classes() -> None:
    with torch.device("meta"):
        model = create_model("i3d", num_classes=174)
    assert count(model) == 12_465_614
    assert count(model) - count(model.Logits) == 12_287_264
    assert count(model.Logits) == 1024 * 174 + 174


def test_i3d_has_three_conv_units_nine_inception_modules_and_four_max_pools() -> None:
    with torch.device("meta"):
        model = create_model("i3d", num_classes=10)
    top = dict(model.named_children())
    assert [n for n, m in top.items() if isinstance(m, Unit3D)] == ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    inception = [n for n, m in top.items() if isinstance(m, InceptionModule)]
    assert inception == ["Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
                         "Mixed_5b", "Mixed_5c"]
    assert sum(isinstance(m, nn.MaxPool3d) for m in top.values()) == 4
    assert model.get_submodule(model.explain_layer) is model.Mixed_5c


@pytest.mark.parametrize(("strides", "steps"), [((1, 1, 2), 8), ((2, 2, 2), 2), ((1, 2, 2), 4)])
def test_i3d_temporal_strides_set_the_steps_of_mixed_5c(strides: tuple[int, int, int], steps: int) -> None:
    # Mänttäri 2020: stride 1 in Conv3d_1a and MaxPool3d_4a keeps L/2 = 8 steps of a 16-frame clip; original L/8
    with torch.device("meta"):
        model = I3D(num_classes=5, temporal_strides=strides)
        features = model.forward_features(torch.empty(1, 3, 16, 224, 224))
    assert tuple(features.shape) == (1, 1024, steps, 7, 7)


def test_i3d_logits_are_the_time_average_of_per_step_logits() -> None:
    torch.manual_seed(0)
    model = create_model("i3d", num_classes=4, in_channels=2).eval()
    clip = torch.randn(1, 2, 8, 32, 32)
    with torch.no_grad():
        features = model.forward_features(clip).mean(dim=(3, 4), keepdim=True)
        per_step = model.Logits(features).flatten(2)  # [B, K, T']
        assert torch.allclose(model(clip), per_step.mean(dim=2), atol=1e-5)


def test_i3d_rejects_a_temporal_stride_outside_one_or_two() -> None:
    with pytest.raises(ValueError, match="temporal_strides"):
        create_model("i3d", num_classes=3, temporal_strides=(3, 1, 2))
