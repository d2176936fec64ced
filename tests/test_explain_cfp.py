"""Class Feature Pyramids (Stergiou 2021 §7.5, Eqs. 7.2–7.5, Fig. 7.9): the back-step follows a planted path
through a residual block with a grouped conv and a two-branch concatenation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kinetoscope.explain.cfp import (
    back_step_relevance,
    class_feature_pyramids,
    kernel_connectivity,
    trace_model,
)
from kinetoscope.models import create_model
from kinetoscope.registry import EXPLAINERS


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _set(conv: nn.Conv3d, entries: dict[tuple[int, int], float]) -> None:
    """Kernel of uniform taps: ``entries[(out, in_within_group)]`` spread evenly over the extent."""
    with torch.no_grad():
        conv.weight.zero_()
        extent = conv.weight[0, 0].numel()
        for (out, inp), value in entries.items():
            conv.weight[out, inp] = value / extent


class Mixer(nn.Module):
    """Two branches concatenated on channels: b0 one 1x1x1 conv; b1 1x1x1 -> ReLU -> 3x3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.b0 = nn.Conv3d(4, 2, 1, bias=False)
        self.b1_reduce = nn.Conv3d(4, 2, 1, bias=False)
        self.b1_relu = nn.ReLU()
        self.b1_conv = nn.Conv3d(2, 2, 3, padding=1, bias=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(y), self.b1_conv(self.b1_relu(self.b1_reduce(y)))], dim=1)


class PlantedPaths(nn.Module):
    """stem (colour detectors) -> residual block around a grouped conv -> branched mixer -> GAP -> fc.

    Red flows stem ch0 -> block ch0 -> mixer ch0 (branch 0) -> class 0; green flows stem ch1 -> block
    ch1 -> b1 mid ch0 -> mixer ch2 (branch 1) -> class 1. Blue (stem ch2) is bright everywhere and sits
    in the other group of the grouped conv at the position red has in its group.
    """

    streams = ("rgb",)
    explain_layer = "mixer"

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 4, 3, padding=1, bias=False)
        _set(self.stem, {(0, 0): 1.0, (1, 1): 1.0, (2, 2): 1.0, (3, 0): 0.3, (3, 1): 0.3, (3, 2): 0.3})
        self.grouped = nn.Conv3d(4, 4, 3, padding=1, groups=2, bias=False)
        # within-group indices: group 0 = channels {0, 1}, group 1 = {2, 3}
        _set(self.grouped, {(0, 0): 1.0, (0, 1): 0.1, (1, 0): 0.1, (1, 1): 1.0,
                            (2, 0): 1.0, (2, 1): 0.1, (3, 0): 0.1, (3, 1): 1.0})
        self.mixer = Mixer()
        _set(self.mixer.b0, {(0, 0): 1.0, (1, 3): 1.0})
        _set(self.mixer.b1_reduce, {(0, 1): 1.0, (1, 2): 1.0})
        _set(self.mixer.b1_conv, {(0, 0): 1.0, (0, 1): 0.01, (1, 1): 1.0})
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.grouped(x) + x)
        return self.fc(self.mixer(y).mean(dim=(2, 3, 4)))


def planted_clip() -> torch.Tensor:
    """Red square top-left, green square bottom-right, blue 0.5 everywhere; ``[1, 3, 8, 32, 32]``."""
    clip = torch.zeros(1, 3, 8, 32, 32)
    clip[0, 0, :, 4:12, 4:12] = 1.0
    clip[0, 1, :, 20:28, 20:28] = 1.0
    clip[0, 2] = 0.5
    return clip


def _kept_by_module(pyramid) -> list[dict[str, list[int]]]:
    return [{pyramid.modules[name]: sorted(channels) for name, channels in level.items()}
            for level in pyramid.levels]


def test_back_steps_select_the_channels_the_red_signal_flows_through():
    model = PlantedPaths()
    (pyramid,) = class_feature_pyramids(model, planted_clip(), target=0, depth=4, theta=0.6)
    kept = _kept_by_module(pyramid)
    assert kept[0] == {"mixer": [0]}
    assert kept[1] == {}  # branch 0 has one conv; the two-conv branch 1 is the spine and carries nothing
    # residual block output, its input (grouped main path united with the all-ones shortcut), the clip
    assert list(kept[2].values()) == [[0]] and list(kept[3].values()) == [[0]] and list(kept[4].values()) == [[0]]
    # the block input keeps only channel 0: the grouped kernel is zero (not repeated) for the bright blue
    # channel 2, which sits at the same position in the other group
    level2 = pyramid.heatmaps[2]
    assert level2[2:6, 6:10, 6:10].mean() > 0.8 and level2[:, 20:28, 20:28].max() < 0.05


def test_back_steps_for_the_green_class_follow_the_longer_branch():
    model = PlantedPaths()
    (pyramid,) = class_feature_pyramids(model, planted_clip(), target=1, depth=4, theta=0.6)
    kept = _kept_by_module(pyramid)
    assert kept[0] == {"mixer": [2]}
    assert kept[1] == {"mixer.b1_relu": [0]}
    assert list(kept[2].values()) == [[1]] and list(kept[3].values()) == [[1]] and list(kept[4].values()) == [[1]]
    clip_level = pyramid.heatmaps[4]  # the input's green channel
    assert clip_level[:, 20:28, 20:28].mean() > 0.8 and clip_level[:, 4:12, 4:12].max() < 0.05


def test_feature_wise_tree_links_each_kept_channel_to_its_parent():
    (pyramid,) = class_feature_pyramids(PlantedPaths(), planted_clip(), target=1, depth=4, mode="feature")
    names = {d: next(iter(level)) for d, level in enumerate(pyramid.levels) if level}
    top = pyramid.tree[(names[0], 2)]
    mid = pyramid.tree[(names[1], 0)]
    block = pyramid.tree[(names[2], 1)]
    assert top.parents == [] and mid.parents == [(names[0], 2)]
    # the block output is reached through branch 1 (one parent: the mid channel)
    assert block.parents == [(names[1], 0)] and block.depth == 2
    block_input = pyramid.tree[(names[3], 1)]  # grouped conv child and shortcut pass-through of the same channel
    assert block_input.parents == [(names[2], 1)]


def test_grouped_kernels_are_inflated_with_zeros_outside_their_group():
    conv = nn.Conv3d(4, 6, (1, 3, 3), groups=2, bias=False)
    kernel, connected = kernel_connectivity(conv)
    assert kernel.shape == connected.shape == (6, 4)
    assert connected[:3, :2].all() and not connected[:3, 2:].any() and connected[3:, 2:].all()
    torch.testing.assert_close(kernel[4, 2:], conv.weight[4].mean(dim=(1, 2, 3)).detach())
    assert (kernel[:3, 2:] == 0).all()


def test_relevance_is_minmax_of_kernel_times_pooled_activation_over_connected_inputs():
    kernel = torch.tensor([[2.0, 1.0, 0.0, 4.0], [0.0, 0.0, 3.0, 0.0]])
    connected = torch.tensor([[True, True, False, True], [False, False, True, False]])
    pooled = torch.tensor([1.0, 3.0, 9.0, 0.5])
    # row 0: products 2, 3, -, 2 -> (0, 1, 0, 0); row 1: one connected input (depth-wise) keeps it
    relevance = back_step_relevance(kernel, connected, pooled)
    torch.testing.assert_close(relevance, torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]))


def test_depth_limits_the_walk_even_along_identity_shortcuts():
    torch.manual_seed(0)
    model = create_model("r3d_18", num_classes=3)
    (pyramid,) = class_feature_pyramids(model, torch.rand(1, 3, 8, 32, 32), depth=1)
    assert len(pyramid.levels) == 2 and pyramid.heatmaps.shape == (2, 8, 32, 32)
    assert all(module.startswith("layer4.1") for module in pyramid.modules.values())


@pytest.mark.parametrize(
    ("name", "shape"),
    [("r2plus1d_18", (1, 3, 8, 32, 32)), ("x3d_xs", (1, 3, 4, 32, 32)), ("i3d", (1, 3, 8, 64, 64))],
)
def test_three_back_steps_through_residual_grouped_and_branched_models(name, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    graph = trace_model(model)
    (pyramid,) = class_feature_pyramids(model, torch.rand(shape), graph=graph, depth=3)
    assert [bool(level) for level in pyramid.levels] == [True] * 4
    assert pyramid.heatmaps.shape == (4, *shape[2:])
    assert np.isfinite(pyramid.heatmaps).all() and pyramid.heatmaps.max() <= 1.0


def test_cfp_explainer_reports_kept_channels_per_level():
    explanation = EXPLAINERS.get("cfp")(PlantedPaths(), [planted_clip()], target=0, depth=4)
    assert explanation.heatmaps.shape == (1, 8, 32, 32) and explanation.targets.tolist() == [0]
    assert explanation.values[0]["level0_channels"] == 1 and explanation.values[0]["level1_channels"] == 0


def test_bad_options_name_the_value_and_what_is_accepted():
    with pytest.raises(ValueError, match="mode='tree'"):
        class_feature_pyramids(PlantedPaths(), planted_clip(), mode="tree")
    with pytest.raises(ValueError, match="theta=1.5"):
        class_feature_pyramids(PlantedPaths(), planted_clip(), theta=1.5)
