"""C-LSTM of Mänttäri 2020 (§4.2, = Broomé 2022 §5.2): the recurrent model compared with I3D.

    [ConvLSTM(32, 5x5, stride 2, full sequence) -> BN -> 2x2 max-pool per step] x 3 (2 for KTH)
    flatten the whole final sequence -> dense K

At 16 frames of 224x224 the spatial size goes 224 -> 112 -> 56 -> 28 -> 14 -> 7 -> 3, so the dense
layer sees 32*3*3*16 = 4,608 features. The ConvLSTMs use the Keras layout of the authors' code (one
bias per gate, none on the recurrent kernel).

Parameter count: the paper reports 1,324,014 at 174 classes. The ConvLSTMs and the dense layer give
exactly 1,323,950 (tested); the remaining 64 are attributed to BatchNorm, which the described
layout (a BN after each of the three layers: 3 x 64 trainable) cannot give exactly — this model
has 1,324,142 trainable parameters. The difference is recorded rather than patched.
"""

from __future__ import annotations

import torch
from torch import nn

from kinetoscope.layers.convlstm import ConvLSTM
from kinetoscope.layers.framewise import Framewise
from kinetoscope.registry import register_model


class CLSTM(nn.Module):
    """``forward(x [B, C, T, H, W])`` -> logits ``[B, K]``."""

    streams = ("rgb",)
    per_frame = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        hidden: int = 32,
        layers: int = 3,
        kernel_size: int = 5,
        input_size: int = 224,
        frames: int = 16,
    ) -> None:
        super().__init__()
        blocks, channels, side = [], in_channels, input_size
        for _ in range(layers):
            blocks.append(nn.ModuleDict({
                "convlstm": ConvLSTM(channels, hidden, kernel_size, stride=2, hidden_bias=False),
                "bn": nn.BatchNorm3d(hidden),
                "pool": Framewise(nn.MaxPool2d(2)),
            }))
            channels = hidden
            side = (side + 1) // 2 // 2  # 'same' stride-2 convolution, then 2x2 pooling
        if side < 1:
            raise ValueError(f"clstm_accv: input_size={input_size} is too small for {layers} layers")
        self.blocks = nn.ModuleList(blocks)
        self.explain_layer = f"blocks.{layers - 1}.convlstm"
        self.classifier = nn.Linear(hidden * side * side * frames, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block["pool"](block["bn"](block["convlstm"](x)))  # [B, h, T, H, W]
        return self.classifier(x.flatten(1))


@register_model("clstm_accv")
def clstm_accv(num_classes: int, in_channels: int = 3, hidden: int = 32, layers: int = 3, kernel_size: int = 5,
               input_size: int = 224, frames: int = 16) -> CLSTM:
    """C-LSTM of Mänttäri 2020 (ACCV 2020): 3 layers for Something-Something, ``layers=2`` for KTH."""
    return CLSTM(num_classes, in_channels, hidden, layers, kernel_size, input_size, frames)
