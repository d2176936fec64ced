"""The video ResNet family — R3D, MC3 and R(2+1)D — as one network factored by what varies.

Source: Tran et al., "A Closer Look at Spatiotemporal Convolutions for Action Recognition" (CVPR 2018),
in the layout of torchvision's video ResNets (``torchvision.models.video.resnet``); the documents use
these as baselines (Stergiou 2021 Ch. 4, the SRTG ResNets; Ilic 2024
benchmark rows R(2+1)D 16x4).

What varies between the members is only

* the **conv builder** of each stage: ``Conv3DSimple`` (3x3x3, R3D), ``Conv3DNoTemporal`` (1x3x3; MC3 =
  "mixed convolutions", 3D in stage 1 and 2D afterwards), ``Conv2Plus1D`` (1x3x3 spatial to M channels,
  BN, ReLU, 3x1x1 temporal; R(2+1)D);
* the **block**: ``BasicBlock`` (two builder convs, depths 18/34) or ``Bottleneck`` (1x1x1, builder,
  1x1x1; depths 50/101);
* the **stem**: 3x7x7 conv to 64 channels (R3D, MC3) or its (2+1)D factorisation 1x7x7 -> 45 -> 3x1x1.

The (2+1)D mid-channel rule (Tran et al. §3.5) keeps the factorised conv at the parameter count of the full
3D conv it replaces: ``M = floor(t·d²·N_in·N_out / (d²·N_in + t·N_out))`` with t = 3, d = 3. As in
torchvision and the SRTG code, M is computed once per block from the block's
input and stage widths and used by all of that block's factorised convs.

Widths 64/128/256/512, strides 1/2/2/2 (in time too, except MC3's 2D stages), no max-pool after the stem,
global average pool, dropout, linear classifier.

Parameter counts at 400 classes (tests/test_models_resnet3d.py): r3d_18 33,371,472; mc3_18 11,695,440;
r2plus1d_18 31,505,325 — exactly torchvision's, with identical state_dict shapes (only names differ; the
key mapping lives in ``kinetoscope.models.weights``).

Deviation, depths 50/101: the bottleneck's ``expansion`` defaults to **1** (1x1x1 -> 3x3x3 -> 1x1x1 all at
stage width), the layout of the SRTG code whose plain baselines the documents report (r3d-50 36.72M,
r3d-101 69.06M, r(2+1)d-50 34.86M, r(2+1)d-101 67.22M; Stergiou 2021 Tables 4.2, 4.5). ``bottleneck_expansion=4``
gives the layout of torchvision's ``VideoResNet(Bottleneck, ...)`` (ImageNet-style 4x expansion).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kinetoscope.layers.conv2plus1d import Conv2Plus1D
from kinetoscope.layers.init import he_fan_out_init_
from kinetoscope.registry import register_model


def mid_channels(in_planes: int, out_planes: int, temporal: int = 3, spatial: int = 3) -> int:
    """(2+1)D mid-channel rule, Tran et al. 2018 §3.5: ``floor(t·d²·N_in·N_out / (d²·N_in + t·N_out))``."""
    d2 = spatial * spatial
    return (temporal * d2 * in_planes * out_planes) // (d2 * in_planes + temporal * out_planes)


# ---------------------------------------------------------------------------------------------------
# Conv builders: (in_planes, out_planes, mid_planes, stride) -> module; ``downsample_stride`` says how the
# 1x1x1 shortcut projection must stride to stay aligned with the builder's output.


class Conv3DSimple(nn.Conv3d):
    """3x3x3 conv (R3D); ``mid_planes`` is ignored. ``[B, C, T, H, W] -> [B, C', T/s, H/s, W/s]``."""

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int | None = None, stride: int = 1):
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return (stride, stride, stride)


class Conv3DNoTemporal(nn.Conv3d):
    """2D convolution 1x3x3 applied per frame (MC3's upper stages); strides space only. ``[B,C,T,H,W]``."""

    def __init__(self, in_planes: int, out_planes: int, mid_planes: int | None = None, stride: int = 1):
        super().__init__(
            in_planes,
            out_planes,
            kernel_size=(1, 3, 3),
            stride=(1, stride, stride),
            padding=(0, 1, 1),
            bias=False,
        )

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return (1, stride, stride)


ConvBuilder = type[Conv3DSimple] | type[Conv3DNoTemporal] | type[Conv2Plus1D]

# ---------------------------------------------------------------------------------------------------
# Blocks


class BasicBlock(nn.Module):
    """Two builder convs with BN, identity or 1x1x1-projection shortcut, ReLU after the sum."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        conv_builder: ConvBuilder,
        stride: int = 1,
        downsample: nn.Module | None = None,
        expansion: int = 1,
    ):
        super().__init__()
        mid = mid_channels(in_planes, planes)
        self.conv1 = conv_builder(in_planes, planes, mid, stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv_builder(planes, planes, mid, 1)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1x1 reduce -> builder conv -> 1x1x1 to ``planes * expansion``, BN after each, ReLU after the sum."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        conv_builder: ConvBuilder,
        stride: int = 1,
        downsample: nn.Module | None = None,
        expansion: int = 1,
    ):
        super().__init__()
        mid = mid_channels(in_planes, planes)
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = conv_builder(planes, planes, mid, stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


Block = type[BasicBlock] | type[Bottleneck]

# ---------------------------------------------------------------------------------------------------
# Stems


class Stem(nn.Module):
    """``conv`` (3x7x7, or its (2+1)D factorisation) -> BN -> ReLU; spatial stride 2, no max-pool.

    ``[B, C_in, T, H, W] -> [B, 64, T, H/2, W/2]``.
    """

    def __init__(self, in_channels: int, factorised: bool, width: int = 64):
        super().__init__()
        if factorised:
            # R(2+1)D stem: 1x7x7 -> 45 channels -> BN -> ReLU -> 3x1x1. The mid rule would give
            # floor(3·49·3·64 / (49·3 + 3·64)) = 83; torchvision and the paper's code fix 45.
            self.conv: nn.Module = Conv2Plus1D(
                in_channels, width, 45, stride=2, spatial_kernel=7, temporal_kernel=3, temporal_stride=1
            )
        else:
            self.conv = nn.Conv3d(
                in_channels, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False
            )
        self.bn = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


# ---------------------------------------------------------------------------------------------------
# The network


class VideoResNet(nn.Module):
    """Generic video ResNet: stem, four stages of ``block`` with per-stage ``conv_builders``, GAP, FC.

    ``forward(x: [B, C, T, H, W]) -> logits [B, num_classes]``. Any T >= 1 and H, W >= 16 work (the
    stages stride time by 8 overall for R3D/R(2+1)D, and space by 16 after the stem).
    """

    streams = ("rgb",)
    per_frame = False
    explain_layer = "layer4"

    def __init__(
        self,
        block: Block,
        conv_builders: Sequence[ConvBuilder],
        layers: Sequence[int],
        factorised_stem: bool,
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.0,
        expansion: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512),
    ):
        super().__init__()
        if len(conv_builders) != 4 or len(layers) != 4 or len(widths) != 4:
            raise ValueError(
                f"VideoResNet needs 4 stages; got {len(conv_builders)} conv builders, {len(layers)} depths, "
                f"{len(widths)} widths"
            )
        if block is BasicBlock and expansion != 1:
            raise ValueError(
                f"bottleneck_expansion={expansion} applies to depths 50/101 only (basic blocks: 1)"
            )
        self.expansion = expansion
        self.default_input = (in_channels, 16, 112, 112)  # torchvision's Kinetics clips: 16 frames, 112² crop
        self.stem = Stem(in_channels, factorised_stem, widths[0])
        self.in_planes = widths[0]
        strides = (1, 2, 2, 2)
        self.layer1 = self._make_layer(block, conv_builders[0], widths[0], layers[0], strides[0])
        self.layer2 = self._make_layer(block, conv_builders[1], widths[1], layers[1], strides[1])
        self.layer3 = self._make_layer(block, conv_builders[2], widths[2], layers[2], strides[2])
        self.layer4 = self._make_layer(block, conv_builders[3], widths[3], layers[3], strides[3])
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[3] * expansion, num_classes)
        he_fan_out_init_(self)  # torchvision's: He fan-out convs, unit BN, small-normal classifier

    def _make_layer(
        self, block: Block, conv_builder: ConvBuilder, planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        out_planes = planes * self.expansion
        downsample = None
        if stride != 1 or self.in_planes != out_planes:
            downsample = nn.Sequential(
                nn.Conv3d(
                    self.in_planes,
                    out_planes,
                    kernel_size=1,
                    stride=conv_builder.downsample_stride(stride),
                    bias=False,
                ),
                nn.BatchNorm3d(out_planes),
            )
        layers = [block(self.in_planes, planes, conv_builder, stride, downsample, self.expansion)]
        self.in_planes = out_planes
        for _ in range(1, blocks):
            layers.append(block(self.in_planes, planes, conv_builder, 1, None, self.expansion))
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, 512·expansion, T', H', W']`` (output of ``layer4``)."""
        x = self.stem(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


_DEPTHS: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}
_FAMILIES: dict[str, tuple[tuple[ConvBuilder, ...], bool]] = {
    "r3d": ((Conv3DSimple,) * 4, False),
    "mc3": ((Conv3DSimple,) + (Conv3DNoTemporal,) * 3, False),
    "r2plus1d": ((Conv2Plus1D,) * 4, True),
}


def video_resnet(
    family: str,
    depth: int,
    num_classes: int = 400,
    in_channels: int = 3,
    dropout: float = 0.0,
    expansion: int = 1,
) -> VideoResNet:
    """Build ``family`` ("r3d" | "mc3" | "r2plus1d") at ``depth`` (18 | 34 | 50 | 101)."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown video ResNet family {family!r}; expected one of {', '.join(_FAMILIES)}")
    if depth not in _DEPTHS:
        raise ValueError(
            f"unknown video ResNet depth {depth}; expected one of {', '.join(map(str, _DEPTHS))}"
        )
    block, layers = _DEPTHS[depth]
    builders, factorised_stem = _FAMILIES[family]
    return VideoResNet(block, builders, layers, factorised_stem, num_classes, in_channels, dropout, expansion)


# ---------------------------------------------------------------------------------------------------
# Registered variants (torchvision names; 50/101 as in the SRTG code, see the module docstring)


@register_model("r3d_18")
def r3d_18(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> VideoResNet:
    """R3D-18 (Tran et al. 2018): 3x3x3 convs throughout; 33,371,472 params at 400 classes."""
    return video_resnet("r3d", 18, num_classes, in_channels, dropout)


@register_model("r3d_34")
def r3d_34(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> VideoResNet:
    """R3D-34: the SRTG baseline r3d-34 (Stergiou 2021 Table 4.2: 63.68M)."""
    return video_resnet("r3d", 34, num_classes, in_channels, dropout)


@register_model("r3d_50")
def r3d_50(
    num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0, bottleneck_expansion: int = 1
) -> VideoResNet:
    """R3D-50, bottleneck blocks (SRTG baseline r3d-50, 36.72M reported, at the default expansion 1)."""
    return video_resnet("r3d", 50, num_classes, in_channels, dropout, bottleneck_expansion)


@register_model("r3d_101")
def r3d_101(
    num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0, bottleneck_expansion: int = 1
) -> VideoResNet:
    """R3D-101, bottleneck blocks (SRTG baseline r3d-101, 69.06M reported, at the default expansion 1)."""
    return video_resnet("r3d", 101, num_classes, in_channels, dropout, bottleneck_expansion)


@register_model("mc3_18")
def mc3_18(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> VideoResNet:
    """MC3-18 (Tran et al. 2018 §3.2): 3D convs in stage 1, 2D (1x3x3) after; 11,695,440 params."""
    return video_resnet("mc3", 18, num_classes, in_channels, dropout)


@register_model("mc3_34")
def mc3_34(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> VideoResNet:
    """MC3-34: MC3 with basic blocks [3, 4, 6, 3]."""
    return video_resnet("mc3", 34, num_classes, in_channels, dropout)


@register_model("r2plus1d_18")
def r2plus1d_18(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> VideoResNet:
    """R(2+1)D-18 (Tran et al. 2018 §3.5): every 3x3x3 conv factorised; 31,505,325 params at 400 classes."""
    return video_resnet("r2plus1d", 18, num_classes, in_channels, dropout)


@register_model("r2plus1d_34")
def r2plus1d_34(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> VideoResNet:
    """R(2+1)D-34: the SRTG baseline r(2+1)d-34 (Stergiou 2021 Table 4.2: 61.83M)."""
    return video_resnet("r2plus1d", 34, num_classes, in_channels, dropout)


@register_model("r2plus1d_50")
def r2plus1d_50(
    num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0, bottleneck_expansion: int = 1
) -> VideoResNet:
    """R(2+1)D-50, bottleneck blocks (SRTG baseline, 34.86M reported, at the default expansion 1)."""
    return video_resnet("r2plus1d", 50, num_classes, in_channels, dropout, bottleneck_expansion)


@register_model("r2plus1d_101")
def r2plus1d_101(
    num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0, bottleneck_expansion: int = 1
) -> VideoResNet:
    """R(2+1)D-101, bottleneck blocks (SRTG baseline, 67.22M reported, at the default expansion 1)."""
    return video_resnet("r2plus1d", 101, num_classes, in_channels, dropout, bottleneck_expansion)
