"""Profiling figures: parameters, FLOPs (2 per multiply-add), activation memory, latency fields."""

from __future__ import annotations

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from kinetoscope.models import create_model, model_info
from kinetoscope.models.profile import format_profile, optimize_for_inference, profile_model


def test_single_conv3d_flops_are_two_per_multiply_add_counted_by_hand() -> None:
    conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
    profile = profile_model(conv, input_shape=(3, 4, 8, 8), latency=False)
    macs = 8 * (4 * 8 * 8) * (3 * 3 * 3 * 3)  # outputs x (C_in k^3) multiply-adds each
    assert profile["params"] == profile["trainable_params"] == 3 * 8 * 27 + 8
    assert profile["flops"] == 2 * macs == 331_776
    assert profile["gmacs"] == macs / 1e9
    assert profile["activation_bytes"] == 8 * 4 * 8 * 8 * 4  # one float32 output volume


def test_activation_memory_counts_an_in_place_output_once() -> None:
    shape = (3, 2, 4, 4)
    in_place = nn.Sequential(nn.Conv3d(3, 5, 1), nn.ReLU(inplace=True))
    copying = nn.Sequential(nn.Conv3d(3, 5, 1), nn.ReLU())
    volume = 5 * 2 * 4 * 4 * 4
    assert profile_model(in_place, shape, latency=False, flops=False)["activation_bytes"] == volume
    assert profile_model(copying, shape, latency=False, flops=False)["activation_bytes"] == 2 * volume


def test_frozen_parameters_are_not_trainable() -> None:
    model = nn.Sequential(nn.Conv3d(3, 4, 1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 1, 2, 2))
    for p in model[0].parameters():
        p.requires_grad_(False)
    profile = profile_model(model, (3, 1, 2, 2), latency=False)
    assert profile["params"] == 16 + 34 and profile["trainable_params"] == 34
    assert profile["flops"] == 2 * (4 * 3 * 4) + 2 * (16 * 2)


def test_registered_names_are_counted_on_the_meta_device_with_sizes_from_the_input() -> None:
    profile = model_info("i3d", input_shape=(3, 16, 112, 112), num_classes=174, latency=False, activations=False)
    assert profile["params"] == 12_465_614
    assert profile["flops"] > 0 and profile["flops_by_module"]["Mixed_5c"] > 0
    # cnn3d sizes its classifier from input_size and frames: the profile builds it for the given clip
    profile = profile_model("cnn3d", (1, 16, 32, 32), num_classes=5, latency=False, activations=False)
    assert profile["params"] == sum(
        p.numel() for p in create_model("cnn3d", 5, 1, input_size=32, frames=16).parameters())


class TwoStreamToy(nn.Module):
    streams = ("rgb", "flow")
    flow_channels = 2

    def __init__(self) -> None:
        super().__init__()
        self.rgb = nn.Conv3d(3, 4, 1)
        self.flow = nn.Conv3d(2, 4, 1)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return (self.rgb(rgb) + self.flow(flow)).mean(dim=(2, 3, 4))


def test_two_stream_models_get_an_rgb_and_a_flow_clip() -> None:
    profile = profile_model(TwoStreamToy(), (3, 2, 4, 4), latency=True, repeats=1)
    positions = 2 * 4 * 4
    assert profile["flops"] == 2 * positions * 4 * (3 + 2)
    assert profile["latency_ms"] > 0 and profile["repeats"] == 1 and profile["batch"] == 1


def test_format_profile_renders_every_figure() -> None:
    profile = profile_model(nn.Conv3d(3, 8, 3, padding=1), (3, 4, 8, 8), repeats=1)
    table = format_profile(profile)
    assert isinstance(table, Table)
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    for label in ("parameters", "GFLOPs / clip", "GMACs / clip", "activation memory", "CPU latency"):
        assert label in text


def test_optimize_for_inference_keeps_the_outputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(3, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten(), nn.Linear(6, 2))
    model.train()
    model(torch.randn(4, 3, 4, 8, 8))  # give BatchNorm non-trivial running statistics
    model.eval()
    clip = torch.randn(2, 3, 4, 8, 8)
    fast = optimize_for_inference(model, example=clip)
    with torch.inference_mode():
        assert torch.allclose(fast(clip), model(clip), atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fast.modules())  # folded into the conv
