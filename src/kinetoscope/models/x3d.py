"""X3D: progressively expanded efficient video networks — XS, S, M, L.

Source: Feichtenhofer 2020, "X3D: Expanding Architectures for Efficient Video Recognition", Table 1
and §4, in the layout of PyTorchVideo's ``create_x3d`` (the hub models the documents benchmark: Ilic 2024
Table 4.1 rows X3D-XS 4x12, X3D-S 13x6, X3D-M 16x5 and the E2S-X3D streams; the MTNet layout
of Stergiou 2021 is X3D's skeleton).

Layout (widths at the X3D-S/M/L width factor γ_w = 2, bottleneck factor γ_b = 2.25):

| part   | layers                                                                  | out channels |
|--------|-------------------------------------------------------------------------|--------------|
| stem   | 1x3x3 conv, stride (1,2,2) -> channelwise 5x1x1 conv -> BN -> ReLU      | 24           |
| layer1 | bottlenecks x d1, first block spatial stride 2                          | 24 (inner 54)|
| layer2 | bottlenecks x d2                                                        | 48 (108)     |
| layer3 | bottlenecks x d3                                                        | 96 (216)     |
| layer4 | bottlenecks x d4                                                        | 192 (432)    |
| head   | 1x1x1 conv 432 -> BN -> ReLU -> global avg pool -> fc1 2048 -> ReLU -> dropout -> fc K |  |

Bottleneck: 1x1x1 -> BN -> ReLU -> channelwise 3x3x3 (stride (1,2,2) in a stage's first block) -> BN ->
[SE] -> swish -> 1x1x1 -> BN; shortcut identity, or 1x1x1 projection (with BN only when the width
changes, as PyTorchVideo builds it); ReLU after the sum. Squeeze-excitation sits in every other block
(block indices 0, 2, 4, ... of each stage) with reduction 1/16 rounded to a multiple of 8.

Depths ``ceil(γ_d · (1, 2, 5, 3))``: γ_d = 2.2 -> (3, 5, 11, 7) for XS/S/M, γ_d = 5.0 -> (5, 10, 25, 15)
for L. XS, S and M share one network (3,794,274 params at 400 classes) and differ in clip length, sampling
stride and crop (``default_input``, ``sampling_stride``); L has 6,153,384. Both counts and all state_dict
shapes equal PyTorchVideo's (tests/test_models_x3d.py); the name mapping is in ``kinetoscope.models.weights``.

Deviations: the head pools globally (``AdaptiveAvgPool3d``) where PyTorchVideo uses an ``AvgPool3d`` whose
kernel is fixed by the default clip size — identical at the default input, and any input size works here;
``forward`` returns logits, while PyTorchVideo's hub head appends a softmax.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kinetoscope.layers.init import he_fan_out_init_
from kinetoscope.registry import register_model


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """Scale ``width`` by ``multiplier`` and round to a multiple of ``divisor`` (X3D's channel rounding).

    Never rounds down by more than 10 %, never below ``min_width``: 432 · 1/16 = 27 -> 32, 216 · 1/16 -> 16.
    """
    scaled = width * multiplier
    rounded = max(min_width, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class SqueezeExcitation(nn.Module):
    """Channel gate ``x · sigmoid(W2 relu(W1 avgpool(x)))`` (Hu et al. 2018), as 1x1x1 convs with bias.

    ``[B, C, T, H, W] -> [B, C, T, H, W]``.
    """

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.reduce = nn.Conv3d(channels, reduced, kernel_size=1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.Conv3d(reduced, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.expand(self.relu(self.reduce(self.pool(x)))))


class X3DStem(nn.Module):
    """1x3x3 conv (stride 2) -> depthwise 5x1x1 -> BN -> ReLU. ``[B,C,T,H,W] -> [B,24,T,H/2,W/2]``."""

    def __init__(self, in_channels: int, width: int):
        super().__init__()
        self.spatial = nn.Conv3d(
            in_channels, width, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False
        )
        self.temporal = nn.Conv3d(
            width, width, kernel_size=(5, 1, 1), padding=(2, 0, 0), groups=width, bias=False
        )
        self.bn = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.temporal(self.spatial(x))))


def x3d_shortcut(in_width: int, out_width: int, spatial_stride: int) -> nn.Sequential | None:
    """X3D's shortcut: identity (``None``) or a 1x1x1 projection at the block's spatial stride, with BN only
    when the width changes (PyTorchVideo's layout; state_dict keys ``conv``, ``bn``)."""
    if in_width == out_width and spatial_stride == 1:
        return None
    shortcut = nn.Sequential()
    stride = (1, spatial_stride, spatial_stride)
    shortcut.add_module("conv", nn.Conv3d(in_width, out_width, kernel_size=1, stride=stride, bias=False))
    if in_width != out_width:
        shortcut.add_module("bn", nn.BatchNorm3d(out_width))
    return shortcut


class X3DBlock(nn.Module):
    """X3D bottleneck with channelwise 3x3x3 conv, optional SE and swish (see the module docstring)."""

    def __init__(
        self,
        in_width: int,
        inner_width: int,
        out_width: int,
        spatial_stride: int = 1,
        se_ratio: float = 0.0,
        swish: bool = True,
    ):
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.shortcut = x3d_shortcut(in_width, out_width, spatial_stride)
        self.conv_a = nn.Conv3d(in_width, inner_width, kernel_size=1, bias=False)
        self.bn_a = nn.BatchNorm3d(inner_width)
        self.conv_b = nn.Conv3d(
            inner_width, inner_width, kernel_size=3, stride=stride, padding=1, groups=inner_width, bias=False
        )
        self.bn_b = nn.BatchNorm3d(inner_width)
        self.se = SqueezeExcitation(inner_width, round_width(inner_width, se_ratio)) if se_ratio > 0 else None
        self.act_b: nn.Module = nn.SiLU(inplace=True) if swish else nn.ReLU(inplace=True)
        self.conv_c = nn.Conv3d(inner_width, out_width, kernel_size=1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_b(self.conv_b(out))
        if self.se is not None:
            out = self.se(out)
        out = self.bn_c(self.conv_c(self.act_b(out)))
        return self.relu(out + shortcut)


class X3DHead(nn.Module):
    """conv5 1x1x1 -> BN -> ReLU -> global avg pool -> fc1 (no bias) -> ReLU. ``[B,C,T,H,W] -> [B,2048]``."""

    def __init__(self, in_width: int, conv_width: int, fc_width: int):
        super().__init__()
        self.conv5 = nn.Conv3d(in_width, conv_width, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm3d(conv_width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc1 = nn.Linear(conv_width, fc_width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.bn5(self.conv5(x)))).flatten(1)
        return self.relu(self.fc1(x))


class X3D(nn.Module):
    """X3D network. ``forward(x: [B, C, T, H, W]) -> logits [B, num_classes]``; H, W >= 32."""

    streams = ("rgb",)
    per_frame = False
    explain_layer = "layer4"

    def __init__(
        self,
        depths: Sequence[int],
        num_classes: int = 400,
        in_channels: int = 3,
        stem_width: int = 24,
        widths: Sequence[int] = (24, 48, 96, 192),
        bottleneck_factor: float = 2.25,
        se_ratio: float = 0.0625,
        swish: bool = True,
        head_width: int = 2048,
        dropout: float = 0.5,
        default_input: tuple[int, int, int, int] = (3, 16, 224, 224),
        sampling_stride: int = 5,
    ):
        super().__init__()
        if len(depths) != 4 or len(widths) != 4:
            raise ValueError(f"X3D needs 4 stages; got depths={tuple(depths)}, widths={tuple(widths)}")
        self.default_input = (in_channels, *default_input[1:])
        self.sampling_stride = sampling_stride
        self.stem = X3DStem(in_channels, stem_width)
        in_width = stem_width
        inner_width = stem_width
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            inner_width = int(bottleneck_factor * width)
            blocks = []
            for b in range(depth):
                blocks.append(
                    X3DBlock(
                        in_width,
                        inner_width,
                        width,
                        spatial_stride=2 if b == 0 else 1,
                        se_ratio=se_ratio if b % 2 == 0 else 0.0,
                        swish=swish,
                    )
                )
                in_width = width
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.head = X3DHead(in_width, inner_width, head_width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_width, num_classes)
        he_fan_out_init_(self)  # PyTorchVideo's init_net_weights

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, 192, T, H/32, W/32]`` (output of ``layer4``)."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.head(self.features(x))))


@dataclass(frozen=True)
class X3DVariant:
    """One row of X3D Table 1/3: depth factor γ_d, clip length T, sampling stride τ, crop size."""

    depth_factor: float
    frames: int
    sampling_stride: int
    crop: int

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(math.ceil(self.depth_factor * base) for base in (1, 2, 5, 3))


X3D_VARIANTS = {
    "xs": X3DVariant(depth_factor=2.2, frames=4, sampling_stride=12, crop=160),
    "s": X3DVariant(depth_factor=2.2, frames=13, sampling_stride=6, crop=160),
    "m": X3DVariant(depth_factor=2.2, frames=16, sampling_stride=5, crop=224),
    "l": X3DVariant(depth_factor=5.0, frames=16, sampling_stride=5, crop=312),
}


def x3d(
    variant: str, num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5, swish: bool = True
) -> X3D:
    """Build X3D-``variant`` ("xs" | "s" | "m" | "l") with its clip metadata."""
    if variant not in X3D_VARIANTS:
        raise ValueError(f"unknown X3D variant {variant!r}; expected one of {', '.join(X3D_VARIANTS)}")
    v = X3D_VARIANTS[variant]
    return X3D(
        v.depths,
        num_classes=num_classes,
        in_channels=in_channels,
        swish=swish,
        dropout=dropout,
        default_input=(in_channels, v.frames, v.crop, v.crop),
        sampling_stride=v.sampling_stride,
    )


@register_model("x3d_xs")
def x3d_xs(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5, swish: bool = True) -> X3D:
    """X3D-XS: 4 frames, stride 12, 160² crop; 3,794,274 params at 400 classes."""
    return x3d("xs", num_classes, in_channels, dropout, swish)


@register_model("x3d_s")
def x3d_s(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5, swish: bool = True) -> X3D:
    """X3D-S: 13 frames, stride 6, 160² crop; same network as XS/M."""
    return x3d("s", num_classes, in_channels, dropout, swish)


@register_model("x3d_m")
def x3d_m(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5, swish: bool = True) -> X3D:
    """X3D-M: 16 frames, stride 5, 224² crop; same network as XS/S."""
    return x3d("m", num_classes, in_channels, dropout, swish)


@register_model("x3d_l")
def x3d_l(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.5, swish: bool = True) -> X3D:
    """X3D-L: depth factor 5.0 (5, 10, 25, 15 blocks), 16 frames, stride 5, 312² crop; 6,153,384 params."""
    return x3d("l", num_classes, in_channels, dropout, swish)
