"""VGG+LSTM, the partly recurrent pain baseline of Broomé 2022 §3.2 (after Rodriguez et al. 2017), in one
and two streams (Table 3.4).

    VGG+LSTM     [B, 3, 10, 128, 128]
      VGG-16 conv trunk on every frame (13 convs 3x3, 5 max-pools)            [B, 512, 10, 4, 4]
      flatten -> dense 4096 + ReLU (VGG-16's first dense layer, fc1)           [B, 10, 4096]
      LSTM 512, every step                                                     [B, 10, 512]
      time-distributed dense 512 -> K                                          [B, 10, K]
    VGG+LSTM-2   an RGB and a flow stream as above up to the LSTM, fused by element-wise addition
                 (the fusion chosen for every two-stream baseline, §3.2), dropout 0.2, the same head.

Parameters (Keras counting, which here equals ``sum(p.numel())``: no BatchNorm, and :class:`LSTM` keeps
one bias per gate): 57,713,474 = 14,714,688 (VGG-16 conv trunk) + 33,558,528 (8192 -> 4096) + 9,439,232
(LSTM) + 1,026 (head) at 128² and 2 classes, and 115,425,922 for the two-stream model — both as in
Table 3.4. The dense layer's input is ``512·(H/32)·(W/32)``, so it is trained from scratch (§3.2); the
conv trunk keeps torchvision's ``vgg16`` key names (``features.0.weight`` …) and ``pretrained=PATH``
initialises it from that ImageNet checkpoint (still trainable, §3.2).

Flow has the magnitude appended as a third channel when given as (u, v) (§3.2, as in ConvLSTM-1).
``forward`` returns per-frame logits ``[B, T, K]`` (``per_frame = True``); the clip verdict is the
majority vote of :func:`kinetoscope.models.pain.clip_scores`, as for the ConvLSTMs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kinetoscope.layers.framewise import FramewiseSequential
from kinetoscope.layers.lstm import LSTM
from kinetoscope.models.pain import check_input_size, with_magnitude
from kinetoscope.models.weights import load_trunk
from kinetoscope.registry import register_model

# VGG-16 (configuration D of Simonyan & Zisserman 2015, Table 1): conv widths, "M" = 2x2 max-pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_features(in_channels: int = 3) -> FramewiseSequential:
    """The VGG-16 conv trunk in torchvision's ``vgg16().features`` layout (conv + ReLU, 2x2 max-pools),
    applied to every frame: ``[B, C, T, H, W] -> [B, 512, T, H/32, W/32]``; 14,714,688 parameters."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    trunk = FramewiseSequential(*layers)
    for module in trunk.modules():  # torchvision's VGG initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return trunk


class VGGLSTMStream(nn.Module):
    """VGG-16 conv trunk -> fc1 (4096, ReLU) -> LSTM: ``[B, C, T, H, W] -> [B, T, lstm_units]``."""

    def __init__(self, in_channels: int, input_size: int, lstm_units: int = 512, fc_units: int = 4096) -> None:
        super().__init__()
        if input_size % 32 or input_size < 32:
            raise ValueError(f"vgg_lstm: input_size={input_size} must be a multiple of 32 (five 2x2 max-pools)")
        side = input_size // 32
        self.features = vgg16_features(in_channels)
        self.fc1 = nn.Linear(512 * side * side, fc_units)
        self.lstm = LSTM(fc_units, lstm_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).transpose(1, 2).flatten(2)  # [B, T, 512·h·w]
        return self.lstm(torch.relu(self.fc1(x)))


class VGGLSTM(nn.Module):
    """One-stream VGG+LSTM (Broomé 2022 §3.2): ``forward(x [B, C, T, H, W]) -> [B, T, K]``.
    ``stream="flow"`` trains it on optical flow (the "VGG+LSTM flow" row of Table 3.4)."""

    streams = ("rgb",)
    per_frame = True
    explain_layer = "stream.features"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        input_size: int = 128,
        lstm_units: int = 512,
        dropout: float = 0.0,
        stream: str = "rgb",
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if stream not in ("rgb", "flow"):
            raise ValueError(f"vgg_lstm: stream must be 'rgb' or 'flow', got {stream!r}")
        self.streams = (stream,)
        self.input_size = input_size
        self.stream = VGGLSTMStream(3 if stream == "flow" else in_channels, input_size, lstm_units)
        if pretrained:
            load_vgg16_checkpoint(self.stream, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(lstm_units, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("vgg_lstm", x, self.input_size)
        if self.streams == ("flow",) and x.shape[1] == 2:
            x = with_magnitude(x)
        return self.classifier(self.dropout(self.stream(x)))


class VGGLSTM2(nn.Module):
    """Two-stream VGG+LSTM-2 (Broomé 2022 §3.2): RGB and flow streams added after their LSTMs, dropout
    0.2, time-distributed dense. ``forward(rgb, flow [B, 2|3, T, H, W]) -> [B, T, K]``."""

    streams = ("rgb", "flow")
    per_frame = True
    explain_layer = "rgb.features"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        input_size: int = 128,
        lstm_units: int = 512,
        dropout: float = 0.2,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.rgb = VGGLSTMStream(in_channels, input_size, lstm_units)
        self.flow = VGGLSTMStream(3, input_size, lstm_units)
        if pretrained:
            load_vgg16_checkpoint(self.rgb, pretrained)
            load_vgg16_checkpoint(self.flow, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(lstm_units, num_classes)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        check_input_size("vgg_lstm2", rgb, self.input_size)
        check_input_size("vgg_lstm2 (flow)", flow, self.input_size)
        if flow.shape[1] == 2:
            flow = with_magnitude(flow)
        return self.classifier(self.dropout(self.rgb(rgb) + self.flow(flow)))


def load_vgg16_checkpoint(stream: VGGLSTMStream, path: str | Path) -> list[str]:
    """Initialise ``stream``'s conv trunk from a torchvision ``vgg16`` checkpoint (``features.*``; the
    ImageNet classifier ``classifier.*`` is skipped — fc1 here takes ``512·(H/32)²`` inputs, §3.2).
    Returns the skipped keys; a checkpoint of another layout raises ``WeightMismatchError``."""
    return load_trunk(stream.features, path, ignore=("classifier.",), what="VGG-16 conv trunk", strip="features.")


@register_model("vgg_lstm")
def vgg_lstm(
    num_classes: int = 2,
    in_channels: int = 3,
    input_size: int = 128,
    lstm_units: int = 512,
    dropout: float = 0.0,
    stream: str = "rgb",
    pretrained: str | None = None,
) -> VGGLSTM:
    """VGG+LSTM (Broomé 2022 §3.2): 57,713,474 parameters at 128², 2 classes (Table 3.4). ``pretrained``:
    a torchvision ``vgg16`` checkpoint for the conv trunk (the thesis starts from ImageNet weights)."""
    return VGGLSTM(num_classes, in_channels, input_size, lstm_units, dropout=dropout, stream=stream,
                   pretrained=pretrained)


@register_model("vgg_lstm2")
def vgg_lstm2(
    num_classes: int = 2,
    in_channels: int = 3,
    input_size: int = 128,
    lstm_units: int = 512,
    dropout: float = 0.2,
    pretrained: str | None = None,
) -> VGGLSTM2:
    """VGG+LSTM-2, additive fusion (Broomé 2022 §3.2): 115,425,922 parameters (Table 3.4)."""
    return VGGLSTM2(num_classes, in_channels, input_size, lstm_units, dropout=dropout, pretrained=pretrained)
