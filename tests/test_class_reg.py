"""Class Regularisation (Stergiou 2021 ch. 6, Algorithm 1, with the spec's [λ, 1] normalisation): the class
chosen from pooled features without labels, the channel scale λ + (1 - λ)·minmax(M[c]) on a hand-built
case, λ = 1 as the identity, gradients (map yes, classifier no) and the parameter count."""

from __future__ import annotations

import pytest
import torch

from kinetoscope.layers import ClassRegularisation
from kinetoscope.layers.class_reg import AFFECTION_SCHEDULE


def planted_module(affection: float) -> ClassRegularisation:
    """C' = 2 feature dims, C = 3 channels; the map copies feature 0 to channels (2, 0, 1) times (1, 2, 3)."""
    module = ClassRegularisation(channels=3, feature_dim=2, affection=affection)
    with torch.no_grad():
        module.map.weight.copy_(torch.tensor([[2.0, 0.0], [3.0, 0.0], [1.0, 0.0]]))
        module.map.bias.zero_()
    return module


CLASS_WEIGHT = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # N = 3 classes x C' = 2
# M = ReLU(W Mapᵀ): class 0 -> (2, 3, 1), class 1 -> (0, 0, 0), class 2 -> (0, 0, 0) after the ReLU.


def test_scales_channels_by_the_normalised_weights_of_the_best_matching_class() -> None:
    module = planted_module(affection=0.6)
    a = torch.rand(2, 3, 2, 2, 2) + 0.1
    out = module(a, CLASS_WEIGHT)
    assert module.last_class.tolist() == [0, 0]  # only class 0 has positive scores
    minmax = torch.tensor([0.5, 1.0, 0.0])  # (2, 3, 1) -> (x - 1) / 2
    scale = 0.6 + 0.4 * minmax  # in [λ, 1]
    torch.testing.assert_close(out, a * scale.view(1, 3, 1, 1, 1))


def test_the_class_is_chosen_per_sample_from_the_pooled_features() -> None:
    module = ClassRegularisation(channels=2, feature_dim=2, affection=0.5)
    with torch.no_grad():
        module.map.weight.copy_(torch.eye(2))
        module.map.bias.zero_()
    class_weight = torch.tensor([[1.0, 0.2], [0.1, 1.0]])  # M = W: class 0 likes channel 0, class 1 channel 1
    a = torch.zeros(2, 2, 2, 3, 3)
    a[0, 0] = 1.0  # sample 0 active in channel 0
    a[1, 1] = 1.0  # sample 1 active in channel 1
    out = module(a, class_weight)
    assert module.last_class.tolist() == [0, 1]
    torch.testing.assert_close(out[0, 0], a[0, 0])  # channel 0 kept at 1 for class 0
    torch.testing.assert_close(out[1, 1], a[1, 1])  # channel 1 kept at 1 for class 1


def test_affection_one_is_the_identity() -> None:
    torch.manual_seed(0)
    module = ClassRegularisation(channels=8, feature_dim=16, affection=1.0)
    a = torch.randn(3, 8, 2, 4, 4)
    torch.testing.assert_close(module(a, torch.randn(5, 16)), a)


def test_constant_class_row_leaves_activations_unchanged() -> None:
    module = planted_module(affection=0.3)
    a = torch.rand(1, 3, 1, 2, 2)
    negative = -CLASS_WEIGHT.abs()  # every M row is zero after the ReLU
    torch.testing.assert_close(module(a, negative), a)


def test_gradient_reaches_the_map_but_not_the_classifier() -> None:
    torch.manual_seed(1)
    module = ClassRegularisation(channels=4, feature_dim=6, affection=0.7)
    classifier = torch.nn.Linear(6, 3)
    a = torch.rand(2, 4, 2, 3, 3, requires_grad=True)
    module(a, classifier.weight).pow(2).sum().backward()
    assert module.map.weight.grad is not None and module.map.weight.grad.abs().sum() > 0
    assert classifier.weight.grad is None  # the class weights enter detached (§6.3.2)
    assert a.grad is not None


def test_parameter_count_and_schedule() -> None:
    assert sum(p.numel() for p in ClassRegularisation(96, 2048, 0.7).parameters()) == 2048 * 96 + 96
    assert AFFECTION_SCHEDULE == (0.9, 0.8, 0.7, 0.6)
    with pytest.raises(ValueError, match="affection"):
        ClassRegularisation(4, 4, 1.5)
    with pytest.raises(ValueError, match="class_weight"):
        ClassRegularisation(4, 4, 0.5)(torch.rand(1, 4, 1, 1, 1), torch.rand(3, 5))
