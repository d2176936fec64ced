"""Activation maximisation (Feichtenhofer 2017 ch. 6, Eqs. 6.1–6.7): regulariser formulas on hand-made tensors,
large activation gains inside the pixel bound, the preferred input of a linear unit, motion regularisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kinetoscope.explain.actmax import (
    activation_maximisation,
    bound_regulariser,
    pixel_norms,
    regulariser_weights,
    tv2d,
    tv2d1d,
    tv3d,
)
from kinetoscope.models import create_model
from kinetoscope.registry import EXPLAINERS


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hand_made() -> torch.Tensor:
    """One clip, one channel, 2 frames of 2 x 3: frame 0 [[0, 1, 3], [1, 1, 1]], frame 1 = frame 0 + 2."""
    frame = torch.tensor([[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]])
    return torch.stack([frame, frame + 2.0]).view(1, 1, 2, 2, 3)


def test_tv2d_sums_squared_spatial_forward_differences_and_ignores_time():
    # per frame: rows (1-0)² + (1-1)² + (1-3)² = 5, columns (1² + 2²) + (0 + 0) = 5 -> 10; two frames -> 20
    assert tv2d(hand_made()).tolist() == [20.0]
    static = hand_made()[:, :, :1].expand(1, 1, 4, 2, 3)
    assert tv2d(static).tolist() == [40.0]


def test_tv3d_and_tv2d1d_add_the_temporal_term_with_kappa_and_chi():
    x = hand_made()  # temporal differences: 2 at each of the 6 pixels -> 6 * 4 = 24
    assert tv3d(x, kappa=2.5).tolist() == [2.5 * (20.0 + 24.0)]
    assert tv2d1d(x, chi=5.0).tolist() == [20.0 + 5.0 * 24.0]
    assert tv2d1d(x, chi=0.0).tolist() == tv2d(x).tolist()


def test_bound_regulariser_is_the_alpha_norm_of_pixels_and_infinite_beyond_the_bound():
    x = torch.zeros(1, 2, 1, 1, 2)
    x[0, :, 0, 0, 0] = torch.tensor([3.0, 4.0])  # pixel norm 5
    x[0, :, 0, 0, 1] = torch.tensor([0.0, 1.0])  # pixel norm 1
    assert bound_regulariser(x, alpha=3.0, bound=160.0).tolist() == [pytest.approx(125.0 + 1.0)]
    assert bound_regulariser(x, alpha=3.0, bound=4.0).tolist() == [float("inf")]


def test_regulariser_weights_follow_section_6_4():
    lambda_b, lambda_tv = regulariser_weights(112, 112, motion=False)
    assert lambda_b == pytest.approx(1.0 / (112 * 112 * 160.0**3))
    assert lambda_tv == pytest.approx(1.0 / (112 * 112 * (160.0 / 6.5) ** 2))
    assert regulariser_weights(112, 112, motion=True)[1] == pytest.approx(10 * lambda_tv)


def test_maximisation_raises_a_conv_unit_far_above_its_maximum_on_data_within_the_pixel_bound():
    torch.manual_seed(0)
    model = create_model("cnn3d", num_classes=3, in_channels=3, hidden=8, input_size=16, frames=8)
    clips = torch.rand(3, 3, 8, 16, 16)
    result = activation_maximisation(model, clips[:1], target=2, layer="blocks.1.0", steps=60)
    with torch.no_grad():  # â over all three clips (the optimisation saw only the first one)
        store = []
        handle = model.blocks[1][0].register_forward_hook(lambda _m, _i, out: store.append(out.clone()))
        model.eval()(clips)
        handle.remove()
    data_max = float(store[0][:, 2, 2, 4, 4].abs().max())  # centre unit of the 4 x 8 x 8 map
    final = float(result.final_activation[0])
    assert final > 10 * data_max and final > 10 * abs(float(result.initial_activation[0]))
    assert float(pixel_norms(result.pixels[0]).max()) <= 160.0 + 1e-3  # R_B's bound holds
    assert result.objective[-1, 0] > result.objective[0, 0]
    assert 3 < result.receptive_field < 16  # a centre unit of the second block sees part of the frame


class LinearUnit(nn.Module):
    """One 3x3x3 conv unit read at the centre; its preferred input inside the bound is its kernel."""

    streams = ("rgb",)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 1, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3, 4))


def test_the_preferred_input_of_a_linear_unit_is_its_kernel():
    """With the data term dominant, max Σ w·x s.t. every pixel norm ≤ B is x_p = B w_p / ‖w_p‖."""
    torch.manual_seed(1)
    model = LinearUnit()
    result = activation_maximisation(model, torch.rand(1, 3, 5, 5, 5), target=0, layer="conv", steps=60,
                                     data_weight=1e4)
    patch = result.pixels[0][0, :, 1:4, 1:4, 1:4].flatten()  # the centre unit's receptive field
    kernel = model.conv.weight.detach().flatten()
    strong = kernel.abs() > kernel.abs().median()
    assert result.receptive_field == 3
    assert bool((patch.sign() == kernel.sign())[strong].all())
    assert float(torch.nn.functional.cosine_similarity(patch, kernel, dim=0)) > 0.75


class TwoStreamUnit(nn.Module):
    """rgb and flow towers, one conv each, summed: ``forward(rgb, flow) -> [B, 2]``."""

    streams = ("rgb", "flow")

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Conv3d(3, 2, 3, padding=1)
        self.flow = nn.Conv3d(2, 2, 3, padding=1)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return (torch.relu(self.rgb(rgb)) + torch.relu(self.flow(flow))).mean(dim=(2, 3, 4))


def _temporal_roughness(x: torch.Tensor) -> float:
    return float((x[:, :, 1:] - x[:, :, :-1]).pow(2).mean())


def test_strong_spacetime_regularisation_gives_slower_motion_than_unconstrained_time():
    torch.manual_seed(0)
    model = TwoStreamUnit()
    clips = {"rgb": torch.rand(1, 3, 6, 12, 12), "flow": torch.randn(1, 2, 6, 12, 12)}
    slow = activation_maximisation(model, clips, target=1, regulariser="tv3d", kappa=10.0, steps=60)
    fast = activation_maximisation(model, clips, target=1, regulariser="tv2d1d", chi=0.0, steps=60)
    assert slow.streams == ("rgb", "flow") and len(slow.pixels) == 2
    assert _temporal_roughness(slow.pixels[1]) < 0.5 * _temporal_roughness(fast.pixels[1])
    # the rgb stream is regularised by TV2D in both runs, and both runs raise the class score
    assert all(r.final_activation[0] > r.initial_activation[0] for r in (slow, fast))


def test_actmax_explainer_returns_a_displayable_clip_per_input_clip():
    torch.manual_seed(0)
    model = create_model("cnn3d", num_classes=3, in_channels=1, hidden=4, input_size=16, frames=8)
    explanation = EXPLAINERS.get("actmax")(model, [torch.rand(2, 1, 8, 16, 16)], target=[0, 2], steps=5)
    assert explanation.perturbed.shape == (2, 1, 8, 16, 16) and explanation.targets.tolist() == [0, 2]
    assert np.isclose(explanation.perturbed.min(), 0.0) and np.isclose(explanation.perturbed.max(), 1.0)
    assert {"initial_activation", "final_activation", "reference_activation"} <= set(explanation.values[0])


def test_unknown_regulariser_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError, match="regulariser='tv4d'.*tv2d1d"):
        activation_maximisation(LinearUnit(), torch.rand(1, 3, 5, 5, 5), target=0, regulariser="tv4d")


def test_targets_outside_the_classes_or_channels_are_named_not_wrapped_around():
    model = create_model("cnn3d", num_classes=3, in_channels=1, hidden=4, input_size=16, frames=8)
    clips = torch.rand(1, 1, 8, 16, 16)
    # a negative channel would otherwise index from the end and maximise the wrong unit
    with pytest.raises(ValueError, match="target channel -1 outside the 4 channels of layer 'blocks.0'"):
        activation_maximisation(model, clips, target=-1, layer="blocks.0", steps=1)
    with pytest.raises(ValueError, match="target class 3 outside the 3 classes"):
        activation_maximisation(model, clips, target=3, steps=1)
    with pytest.raises(ValueError, match="stream='flow'.*streams \\('rgb',\\)"):
        EXPLAINERS.get("actmax")(model, [clips], target=0, stream="flow", steps=1)
