"""VGG-style 3D CNN (Broomé 2022 §5.4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.models import create_model


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_c3d_defaults_are_the_11_layer_diving48_model_with_23_3m_parameters() -> None:
    with torch.device("meta"):
        model = create_model("c3d", num_classes=48)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 11
    assert count(model.blocks) == 23_299_968
    assert count(model) == 23_299_968 + 512 * 48 + 48 == 23_324_592  # "23.3M" (Broomé 2022 §5.4 d)


def test_c3d_four_max_pools_halve_time_and_space_four_times() -> None:
    with torch.device("meta"):
        model = create_model("c3d", num_classes=48)
        volume = model.blocks(torch.empty(1, 3, 32, 224, 224))
    assert tuple(volume.shape) == (1, 512, 2, 14, 14)


def test_c3d_flatten_head_matches_the_final_volume() -> None:
    model = create_model("c3d", num_classes=7, widths=(4, 8, 8), kernel_sizes=(3, 3, 3),
                         pooling=("max", "max_spatial", "max"), head="flatten", frames=6, input_size=20)
    # time 6 -> 3 -> 3 -> 2, space 20 -> 10 -> 5 -> 3
    assert model.classifier.in_features == 8 * 2 * 3 * 3
    assert model(torch.randn(2, 3, 6, 20, 20)).shape == (2, 7)


def test_c3d_rejects_per_layer_options_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="one entry per layer"):
        create_model("c3d", num_classes=3, widths=(8, 8), kernel_sizes=(3,), pooling=("max", "max"))
    with pytest.raises(ValueError, match="pooling entries"):
        create_model("c3d", num_classes=3, widths=(8,), kernel_sizes=(3,), pooling=("median",))
