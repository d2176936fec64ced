"""The two model families of the frame-dependency study (Broomé 2022 §5.3).

Width ``hidden`` (h) and depth ``blocks`` are the study's knobs; the paper uses 3 blocks and
h in {1, 2, 3, 5, 8, 12, 16, 24, 32, 48}, 64x64 grayscale inputs of 20 frames.

| family   | block                                                   | head                          |
|----------|---------------------------------------------------------|-------------------------------|
| convlstm | ConvLSTM(h, 3x3) -> 2D max-pool 2 (per step) -> BN      | last step, flatten h*8*8 -> K |
| cnn3d    | Conv3d(h, 3x3x3, pad 1) -> ReLU -> 3D max-pool 2 -> BN  | flatten h*2*8*8 -> K          |

Parameter counts at 3 blocks, 5 classes: convlstm 571 (h=1) ... 433,253 (h=48);
cnn3d 735 ... 156,869 — the "600 to 433k" and "700 to 157k" of Broomé 2022 §5.3.
"""

from __future__ import annotations

import torch
from torch import nn

from kinetoscope.layers.convlstm import ConvLSTM
from kinetoscope.layers.framewise import Framewise
from kinetoscope.registry import register_model


class ConvLSTMNet(nn.Module):
    """Stacked ConvLSTM blocks; the classifier reads the last time step's hidden state."""

    streams = ("rgb",)
    per_frame = False
    explain_layer = "blocks.2.convlstm"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        hidden: int = 16,
        blocks: int = 3,
        kernel_size: int = 3,
        input_size: int = 64,
    ):
        super().__init__()
        layers = []
        channels = in_channels
        for _ in range(blocks):
            layers.append(
                nn.ModuleDict(
                    {
                        "convlstm": ConvLSTM(channels, hidden, kernel_size),
                        "pool": Framewise(nn.MaxPool2d(2)),
                        "bn": nn.BatchNorm3d(hidden),
                    }
                )
            )
            channels = hidden
        self.blocks = nn.ModuleList(layers)
        self.explain_layer = f"blocks.{blocks - 1}.convlstm"
        side = input_size // 2**blocks
        self.classifier = nn.Linear(hidden * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block["bn"](block["pool"](block["convlstm"](x)))  # [B, h, T, H, W]
        return self.classifier(x[:, :, -1].flatten(1))


class CNN3DNet(nn.Module):
    """Stacked Conv3d blocks; the classifier reads the flattened final feature volume."""

    streams = ("rgb",)
    per_frame = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        hidden: int = 16,
        blocks: int = 3,
        kernel_size: int = 3,
        input_size: int = 64,
        frames: int = 20,
    ):
        super().__init__()
        layers = []
        channels = in_channels
        for _ in range(blocks):
            layers.append(
                nn.Sequential(
                    nn.Conv3d(channels, hidden, kernel_size, padding=kernel_size // 2),
                    nn.ReLU(inplace=True),
                    nn.MaxPool3d(2),
                    nn.BatchNorm3d(hidden),
                )
            )
            channels = hidden
        self.blocks = nn.Sequential(*layers)
        self.explain_layer = f"blocks.{blocks - 1}.0"
        side = input_size // 2**blocks
        steps = frames // 2**blocks
        if steps < 1 or side < 1:
            raise ValueError(
                f"cnn3d: {blocks} blocks of 2x pooling need frames >= {2**blocks} and input_size >= "
                f"{2**blocks}; got frames={frames}, input_size={input_size}"
            )
        self.classifier = nn.Linear(hidden * steps * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.blocks(x).flatten(1))


@register_model("convlstm")
def convlstm(num_classes: int, in_channels: int = 1, hidden: int = 16, blocks: int = 3,
             kernel_size: int = 3, input_size: int = 64) -> ConvLSTMNet:
    """Temporal Shape ConvLSTM family (Broomé 2022 §5.3)."""
    return ConvLSTMNet(num_classes, in_channels, hidden, blocks, kernel_size, input_size)


@register_model("cnn3d")
def cnn3d(num_classes: int, in_channels: int = 1, hidden: int = 16, blocks: int = 3,
          kernel_size: int = 3, input_size: int = 64, frames: int = 20) -> CNN3DNet:
    """Temporal Shape 3D CNN family (Broomé 2022 §5.3)."""
    return CNN3DNet(num_classes, in_channels, hidden, blocks, kernel_size, input_size, frames)
