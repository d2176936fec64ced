"""Saliency Tubes (Stergiou 2021 §7.4, Eq. 7.1): class weights, the order of upsampling and combining,
planted regions, registered 3D CNNs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kinetoscope.explain.tubes import (
    explain_saliency_tubes,
    layer_class_weights,
    saliency_tube_volumes,
    saliency_tubes,
    spline_upsample,
)
from kinetoscope.models import create_model
from kinetoscope.registry import EXPLAINERS


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: small convolutions on a shared 2-core machine run faster without contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ColourDetectors(nn.Module):
    """Channel 0 fires on red, channel 1 on green (1x1x1 conv + ReLU); GAP; class k reads channel k."""

    streams = ("rgb",)
    explain_layer = "features"

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv3d(3, 2, 1, bias=False)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]).view(2, 3, 1, 1, 1))
        self.features = nn.Sequential(conv, nn.ReLU())
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3, 4)))


def red_green_clip() -> torch.Tensor:
    """Red square top-left (frames 2-5), green square bottom-right (all frames); 8 x 32 x 32."""
    clip = torch.zeros(1, 3, 8, 32, 32)
    clip[0, 0, 2:6, 4:12, 4:12] = 1.0
    clip[0, 1, :, 20:28, 20:28] = 1.0
    return clip


def test_tube_for_each_class_peaks_in_the_region_of_its_detector():
    model = ColourDetectors()
    clip = red_green_clip()
    red = saliency_tubes(model, clip, target=0)[0]
    green = saliency_tubes(model, clip, target=1)[0]
    assert red.shape == (8, 32, 32) and float(red.min()) >= 0 and float(red.max()) == pytest.approx(1.0)
    t, y, x = np.unravel_index(int(red.argmax()), red.shape)
    assert 2 <= t <= 5 and 4 <= y < 12 and 4 <= x < 12
    assert float(red[3, 4:12, 4:12].mean()) > 0.9 and float(red[:, 20:28, 20:28].max()) < 0.05
    assert float(red[7].max()) < 0.05  # no red in frame 7: the tube has a temporal extent too
    assert float(green[:, 20:28, 20:28].mean()) > 0.9 and float(green[:, 4:12, 4:12].max()) < 0.05


def test_class_weights_equal_the_fc_weights_behind_global_average_pooling():
    torch.manual_seed(0)
    model = create_model("r3d_18", num_classes=5).eval()
    clips = torch.randn(2, 3, 8, 32, 32)
    activations, weights, logits, targets = layer_class_weights(model, clips, target=[1, 3])
    assert activations.shape == weights.shape == (2, 512, 1, 2, 2)
    expected = model.fc.weight[targets].detach()
    for b in range(2):  # |R| dy/da_j(r) is W[i, j] at every position r
        torch.testing.assert_close(weights[b], expected[b].view(512, 1, 1, 1).expand_as(weights[b]),
                                   rtol=1e-4, atol=1e-6)


def test_negatively_weighted_and_low_ranked_channels_are_dropped():
    activations = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1, 1).expand(1, 4, 2, 2, 2).clone()
    activations[:, :, 0, 0, 0] = 0.0  # give every channel spatial contrast
    weights = torch.tensor([1.0, -1.0, 0.5, 1.0]).view(1, 4, 1, 1, 1).expand_as(activations).clone()
    # contributions W * mean a: 0.875, -1.75, 1.3125, 3.5 -> min-max 0.5, 0, 0.58, 1
    _, keep_all = saliency_tube_volumes(activations, weights, (2, 4, 4), tau=0.0)
    _, keep_strong = saliency_tube_volumes(activations, weights, (2, 4, 4), tau=0.55)
    assert keep_all.tolist() == [[True, False, True, True]]
    assert keep_strong.tolist() == [[False, False, True, True]]


def test_spline_upsampling_keeps_a_constant_and_reaches_the_input_size():
    coarse = np.full((2, 3, 3), 0.7)
    fine = spline_upsample(coarse, (8, 12, 12))
    assert fine.shape == (8, 12, 12)
    np.testing.assert_allclose(fine, 0.7, atol=1e-9)
    ramp = np.broadcast_to(np.arange(4.0)[None, None, :], (2, 4, 4)).copy()
    up = spline_upsample(ramp, (2, 4, 16))  # a linear ramp stays monotone under cubic splines
    assert np.all(np.diff(up[0, 0]) >= -1e-9)
    # the per-axis matrices are scipy's cubic spline zoom of the whole volume (tensor-product spline)
    from scipy import ndimage

    volume = np.random.default_rng(0).random((3, 2, 3, 4))
    expected = ndimage.zoom(volume, (1, 8 / 2, 12 / 3, 16 / 4), order=3, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(spline_upsample(volume, (8, 12, 16)), expected, atol=1e-9)
    as_tensor = spline_upsample(torch.from_numpy(volume), (8, 12, 16))
    assert isinstance(as_tensor, torch.Tensor) and torch.allclose(as_tensor, torch.from_numpy(expected), atol=1e-9)


def test_default_order_upsamples_each_map_then_squares_and_sums():
    """Eq. 7.1 then §7.4: z_j upsampled to the input, then tube = Σ z_j². Two overlapping maps on a 1x1x4 grid:
    squaring before the spline (``exact=False``) changes which positions are salient."""
    activations = torch.zeros(1, 2, 1, 1, 4)
    activations[0, 0, 0, 0] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    activations[0, 1, 0, 0] = torch.tensor([0.0, 0.0, 0.5, 1.0])
    weights = torch.ones_like(activations)
    size = (1, 1, 16)
    tube, keep = saliency_tube_volumes(activations, weights, size)  # default order
    assert keep.tolist() == [[True, True]]
    z = activations[0].double().numpy()  # already min-max normalised per channel
    expected = sum(np.clip(spline_upsample(z[j], size), 0, 1) ** 2 for j in range(2))
    np.testing.assert_allclose(tube[0], expected / expected.max(), atol=1e-6)
    combined_first, _ = saliency_tube_volumes(activations, weights, size, exact=False)
    shortcut = spline_upsample((z**2).sum(axis=0), size)
    np.testing.assert_allclose(combined_first[0], np.clip(shortcut, 0, None) / shortcut.max(), atol=1e-6)
    salient, salient_shortcut = tube[0, 0, 0] > 0.5, combined_first[0, 0, 0] > 0.5
    assert not np.array_equal(salient, salient_shortcut)  # the order changes the salient region
    assert np.abs(tube - combined_first).max() > 0.15


def test_exact_mode_agrees_with_the_fast_mode_on_where_the_tube_peaks():
    model = ColourDetectors()
    clip = red_green_clip()
    fast = explain_saliency_tubes(model, [clip], target=0, exact=False)
    exact = explain_saliency_tubes(model, [clip], target=0)
    assert fast.heatmaps.shape == exact.heatmaps.shape == (1, 8, 32, 32)
    assert np.abs(fast.heatmaps - exact.heatmaps).max() < 0.1
    assert fast.values[0]["kept_channels"] == 1 and fast.values[0]["target"] == 0


def _quadrant_clips(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 has a square moving in the top-left quadrant; every clip has a distractor square in the
    bottom half. Only the top-left quadrant decides the class. ``[N, 1, 16, 32, 32]``."""
    clips = 0.05 * torch.rand(count, 1, 16, 32, 32, generator=generator)
    labels = torch.arange(count) % 2
    for n in range(count):
        row = int(torch.randint(16, 26, (1,), generator=generator))
        col = int(torch.randint(0, 26, (1,), generator=generator))
        clips[n, 0, :, row:row + 6, col:col + 6] = 1.0
        if labels[n] == 1:
            start = int(torch.randint(0, 6, (1,), generator=generator))
            for t in range(16):
                y = 2 + (start + t // 2) % 8
                clips[n, 0, t, y:y + 5, 3:8] = 1.0
    return clips, labels


def test_trained_cnn3d_whose_decision_depends_on_one_region_gets_its_tube_peak_there():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = create_model("cnn3d", num_classes=2, in_channels=1, hidden=4, input_size=32, frames=16)
    clips, labels = _quadrant_clips(64, generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(30):
        rows = torch.randint(0, 64, (8,), generator=generator)
        loss = nn.functional.cross_entropy(model(clips[rows]), labels[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    test_clips, test_labels = _quadrant_clips(8, torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(test_clips).argmax(1) == test_labels).float().mean() == 1.0
    positives = test_clips[test_labels == 1]
    # the block output (after ReLU, pooling, BN) is what the flatten -> linear head reads
    tubes = saliency_tubes(model, positives, target=1, layer="blocks.2")
    energy = tubes.mean(dim=1)  # [B, H, W]
    top_left = energy[:, :16, :16].mean(dim=(1, 2))
    elsewhere = torch.cat([energy[:, 16:, :].flatten(1), energy[:, :16, 16:].flatten(1)], dim=1).mean(dim=1)
    assert bool((top_left > 2 * elsewhere).all()), (top_left, elsewhere)


@pytest.mark.parametrize(
    ("name", "options", "shape"),
    [
        ("cnn3d", {"in_channels": 1, "hidden": 4, "input_size": 32, "frames": 16}, (2, 1, 16, 32, 32)),
        ("r2plus1d_18", {}, (1, 3, 8, 32, 32)),
        ("x3d_xs", {}, (1, 3, 4, 32, 32)),
        ("i3d", {}, (1, 3, 8, 64, 64)),
    ],
)
def test_registered_3d_cnns_give_tubes_in_unit_range_at_the_input_size(name, options, shape):
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options)
    explanation = EXPLAINERS.get("saliency-tubes")(model, [torch.rand(shape)])
    maps = explanation.heatmaps
    assert maps.shape == (shape[0], *shape[2:])
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    assert len(explanation.values) == shape[0] and explanation.targets.shape == (shape[0],)
