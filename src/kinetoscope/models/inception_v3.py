"""InceptionV3, the single-frame pain baseline of Broomé 2022 §3.2 (Szegedy et al. 2016), in one and two
streams (Table 3.4).

    InceptionV3     [B, 3, T, 320, 240]   (Table 3.3: frames of 320x240; any side >= 75 works)
      InceptionV3 trunk on every frame, Conv2d_1a_3x3 ... Mixed_7c     [B, 2048, T, h, w]
      global average pool -> dense 512 + ReLU                         [B, T, 512]
      dense 512 -> K per frame                                         [B, T, K]   (head="frame")
      ... or the frame logits averaged over time                       [B, K]      (head="clip")
    InceptionV3-2   an RGB and a flow stream as above up to the dense 512, added (§3.2), dropout 0.2,
                    then the same head.

The trunk keeps torchvision's ``inception_v3`` layout and key names (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch5x5_1.bn.running_mean`` …; conv without bias + BatchNorm eps 1e-3); it holds 21,785,568
parameters — torchvision's 27,161,264 less its auxiliary classifier (3,326,696) and 1000-way fc
(2,049,000). ``pretrained=PATH`` initialises it from that checkpoint (the thesis trains from scratch,
which worked better).

Table 3.4 counts 22,852,898 (one stream) and 45,704,770 (two streams) with Keras, whose InceptionV3
BatchNorm has no scale (``scale=False``) and whose count includes the moving mean and variance: the
trunk is then 21,802,784 = 21,785,568 − 17,216 scales + 2·17,216 statistics. The same figures follow
here as :func:`keras_inception_count` (tested); see docs/deviations.md.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from kinetoscope.layers.framewise import FramewiseSequential
from kinetoscope.models.pain import keras_param_count, with_magnitude
from kinetoscope.models.weights import load_trunk
from kinetoscope.registry import register_model

HEADS = ("frame", "clip")
MIN_SIDE = 75  # the smallest frame the trunk's valid convolutions and poolings accept


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d (eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35x35 module (Szegedy 2016 Fig. 5): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool(x)),
        ], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Szegedy 2016 Fig. 10): 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            nn.functional.max_pool2d(x, 3, stride=2),
        ], 1)


class InceptionC(nn.Module):
    """17x17 module with factorised 7x7 convolutions (Szegedy 2016 Fig. 6)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d7 = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d7 = layer(d7)
        return torch.cat([self.branch1x1(x), b7, d7, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool/2."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, nn.functional.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks (Szegedy 2016 Fig. 7)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d3 = torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], 1)
        return torch.cat([self.branch1x1(x), b3, d3, self.branch_pool(_avg_pool(x))], 1)


def inception_v3_trunk(in_channels: int = 3) -> FramewiseSequential:
    """torchvision's ``inception_v3`` from ``Conv2d_1a_3x3`` to ``Mixed_7c`` (no AuxLogits, no fc), applied
    to every frame: ``[B, C, T, H, W] -> [B, 2048, T, h, w]``; 21,785,568 parameters at 3 channels."""
    return FramewiseSequential(OrderedDict([
        ("Conv2d_1a_3x3", BasicConv2d(in_channels, 32, 3, stride=2)),
        ("Conv2d_2a_3x3", BasicConv2d(32, 32, 3)),
        ("Conv2d_2b_3x3", BasicConv2d(32, 64, 3, padding=1)),
        ("maxpool1", nn.MaxPool2d(3, stride=2)),
        ("Conv2d_3b_1x1", BasicConv2d(64, 80, 1)),
        ("Conv2d_4a_3x3", BasicConv2d(80, 192, 3)),
        ("maxpool2", nn.MaxPool2d(3, stride=2)),
        ("Mixed_5b", InceptionA(192, 32)),
        ("Mixed_5c", InceptionA(256, 64)),
        ("Mixed_5d", InceptionA(288, 64)),
        ("Mixed_6a", InceptionB(288)),
        ("Mixed_6b", InceptionC(768, 128)),
        ("Mixed_6c", InceptionC(768, 160)),
        ("Mixed_6d", InceptionC(768, 160)),
        ("Mixed_6e", InceptionC(768, 192)),
        ("Mixed_7a", InceptionD(768)),
        ("Mixed_7b", InceptionE(1280)),
        ("Mixed_7c", InceptionE(2048)),
    ]))


class InceptionV3Stream(nn.Module):
    """Trunk -> global average pool -> dense 512 + ReLU: ``[B, C, T, H, W] -> [B, T, 512]``."""

    def __init__(self, in_channels: int, dense_units: int = 512) -> None:
        super().__init__()
        self.trunk = inception_v3_trunk(in_channels)
        self.fc1 = nn.Linear(2048, dense_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIDE:
            raise ValueError(
                f"inception_v3: frames of {tuple(x.shape[-2:])} are below the trunk's minimum side {MIN_SIDE} "
                "(Broomé 2022 §3.2 uses 320x240)"
            )
        pooled = self.trunk(x).mean(dim=(3, 4)).transpose(1, 2)  # [B, T, 2048]
        return torch.relu(self.fc1(pooled))


def _head(logits: torch.Tensor, head: str) -> torch.Tensor:
    return logits if head == "frame" else logits.mean(dim=1)


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise ValueError(f"inception_v3: head must be one of {HEADS}, got {head!r}")


def load_inception_v3_checkpoint(stream: InceptionV3Stream, path) -> list[str]:
    """Initialise ``stream``'s trunk from a torchvision ``inception_v3`` checkpoint; its ``AuxLogits.*`` and
    ``fc.*`` (replaced by the dense 512 head, §3.2) are skipped and returned."""
    return load_trunk(stream.trunk, path, ignore=("AuxLogits.", "fc."), what="InceptionV3 trunk")


class InceptionV3(nn.Module):
    """One-stream InceptionV3 frame model (Broomé 2022 §3.2): ``forward(x [B, C, T, H, W])`` -> ``[B, T, K]``
    (``head="frame"``: every frame classified on its own) or ``[B, K]`` (``head="clip"``: frame logits
    averaged over time). ``stream="flow"`` trains it on single flow frames (Table 3.4, "InceptionV3 flow")."""

    streams = ("rgb",)
    per_frame = True
    explain_layer = "stream.trunk"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        head: str = "frame",
        dropout: float = 0.0,
        stream: str = "rgb",
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        _check_head(head)
        if stream not in ("rgb", "flow"):
            raise ValueError(f"inception_v3: stream must be 'rgb' or 'flow', got {stream!r}")
        self.streams = (stream,)
        self.head = head
        self.per_frame = head == "frame"
        self.stream = InceptionV3Stream(3 if stream == "flow" else in_channels)
        if pretrained:
            load_inception_v3_checkpoint(self.stream, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(512, num_classes)
        self.default_input = (3, 10, 320, 240)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streams == ("flow",) and x.shape[1] == 2:
            x = with_magnitude(x)
        return _head(self.classifier(self.dropout(self.stream(x))), self.head)


class InceptionV3TwoStream(nn.Module):
    """InceptionV3-2 (Broomé 2022 §3.2): RGB and flow frames through separate InceptionV3 streams, their
    dense-512 features added, dropout 0.2, dense K. ``forward(rgb, flow [B, 2|3, T, H, W])``."""

    streams = ("rgb", "flow")
    per_frame = True
    explain_layer = "rgb.trunk"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        head: str = "frame",
        dropout: float = 0.2,
        pretrained: str | None = None,
    ) -> None:
        super().__init__()
        _check_head(head)
        self.head = head
        self.per_frame = head == "frame"
        self.rgb = InceptionV3Stream(in_channels)
        self.flow = InceptionV3Stream(3)
        if pretrained:
            load_inception_v3_checkpoint(self.rgb, pretrained)
            load_inception_v3_checkpoint(self.flow, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(512, num_classes)
        self.default_input = (3, 10, 320, 240)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if flow.shape[1] == 2:
            flow = with_magnitude(flow)
        return _head(self.classifier(self.dropout(self.rgb(rgb) + self.flow(flow))), self.head)


def keras_inception_count(model: nn.Module) -> int:
    """Parameters as Keras counts its InceptionV3 (Broomé 2022 Table 3.4): Keras's BatchNorm there has no
    scale, and its moving mean and variance are counted — :func:`keras_param_count` less the BN scales."""
    scales = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine)
    return keras_param_count(model) - scales


@register_model("inception_v3")
def inception_v3(
    num_classes: int = 2,
    in_channels: int = 3,
    head: str = "frame",
    dropout: float = 0.0,
    stream: str = "rgb",
    pretrained: str | None = None,
) -> InceptionV3:
    """InceptionV3 frame model (Broomé 2022 §3.2; 22,852,898 Keras-counted parameters at 2 classes, Table
    3.4). ``head``: frame (per-frame logits, vote) | clip (temporal mean); ``stream``: rgb | flow."""
    return InceptionV3(num_classes, in_channels, head, dropout=dropout, stream=stream, pretrained=pretrained)


@register_model("inception_v3_2")
def inception_v3_2(
    num_classes: int = 2,
    in_channels: int = 3,
    head: str = "frame",
    dropout: float = 0.2,
    pretrained: str | None = None,
) -> InceptionV3TwoStream:
    """InceptionV3-2, additive fusion (Broomé 2022 §3.2; 45,704,770 Keras-counted parameters, Table 3.4)."""
    return InceptionV3TwoStream(num_classes, in_channels, head, dropout=dropout, pretrained=pretrained)
