"""Temporal residual networks, T-ResNet (Feichtenhofer 2017 Ch. 7, Feichtenhofer et al. 2017c, dynamic scenes).

RGB only: an ImageNet-style ResNet-50 applied per frame
(:class:`~kinetoscope.models.twostream.FrameResNet`) whose **1st and 3rd residual units of every stage**
conv2_x ... conv5_x become spatiotemporal residual units (§7.3.1, Fig. 7.1b):

    x1     = f(W1 x)                                   (1x1 reduce, BN, ReLU)
    xt     = Wt x1 + b                                 (Eq. 7.4/7.5: 1x1x3 C x C, random init, b = 0)
    F̂      = W3 (S ⊙ f(xt) + f(W2 x1))                 (Eq. 7.6; W2 the 3x3 conv with BN)
    x_{l+1} = f(x + F̂)                                  (Eq. 7.1)

S is a channel-wise affine scale initialised to **0.01** with zero bias (:class:`ChannelScale`), so the
network starts as the frame-wise ResNet plus a 1 % temporal residual. The temporal path works on the
dimensionality-reduced x1 in parallel to the 3x3 conv ("same" zero padding in time: valid convolutions
cost 2.4 % error). After the spatial global average pool a **global temporal max pool** (Eq. 7.7;
≈2 % better than averaging) feeds the new classifier. 16-frame inputs.

Reading of the equations: (7.3) writes the *original* ResNet unit as ``f(W3 f(W2 f(W1 x)))``, with an f
around W3 that the original unit (He et al. 2016a, Eq. 7.1) does not have before the addition; the f
around W3 in (7.6) is read the same way — W3 is followed by BN and the unit's ReLU comes after the
addition — so that with S = 0 a temporal unit is exactly the pretrained ResNet unit. "The temporal
blocks are pre-activation" (§7.3.3): the temporal path has no BN of its own; its bias b and the
affine S are its normalisation, and the ReLU f(xt) sits between Wt and S as Eq. 7.6 writes it.

Parameters (num_classes = 101): 23,714,981 (ResNet-50) + 2 x (3·(64² + 128² + 256² + 512²) + 960 bias)
for the temporal convs + 2 x 2 x 960 for S = 25,809,701 (the thesis gives no count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.models.resnet3d import Bottleneck
from kinetoscope.models.twostream import FrameResNet, stage_blocks
from kinetoscope.registry import register_model


class ChannelScale(nn.Module):
    """Channel-wise affine ``S ⊙ x + β``, S initialised to ``scale`` (0.01), β to 0. ``[B, C, ...]``."""

    def __init__(self, channels: int, scale: float = 0.01):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)


class TemporalBottleneck(nn.Module):
    """Spatiotemporal residual unit F̂ of Eq. 7.6 around an existing ResNet :class:`Bottleneck`.

    Keeps the bottleneck's modules under their names (``conv1``, ``bn1``, ...) so ResNet weights load
    unchanged, and adds ``temporal`` (1x1x3, C x C, bias) and ``scale`` (S). ``[B, C, T, H, W]`` in and out.
    """

    def __init__(self, block: Bottleneck, scale: float = 0.01, taps: int = 3):
        super().__init__()
        self.conv1, self.bn1 = block.conv1, block.bn1
        self.conv2, self.bn2 = block.conv2, block.bn2
        self.conv3, self.bn3 = block.conv3, block.bn3
        self.downsample = block.downsample
        self.relu = nn.ReLU(inplace=True)
        width = block.conv1.out_channels
        # Runs beside the 3x3 conv on x1, so it takes that conv's spatial stride (1 when the stage's stride
        # sits in the first 1x1 conv, the FrameResNet default).
        self.temporal = nn.Conv3d(
            width, width, kernel_size=(taps, 1, 1), stride=block.conv2.stride, padding=(taps // 2, 0, 0),
            bias=True,
        )
        nn.init.kaiming_normal_(self.temporal.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.temporal.bias)
        self.scale = ChannelScale(width, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x1 = self.relu(self.bn1(self.conv1(x)))
        spatial = F.relu(self.bn2(self.conv2(x1)))
        temporal = self.scale(F.relu(self.temporal(x1)))
        out = self.bn3(self.conv3(temporal + spatial))
        return self.relu(out + shortcut)


class TResNet(nn.Module):
    """T-ResNet: ``forward(x [B, 3, T, H, W]) -> logits [B, num_classes]`` (module docstring)."""

    streams = ("rgb",)
    per_frame = False
    explain_layer = "backbone.layer4"

    def __init__(
        self,
        num_classes: int = 101,
        in_channels: int = 3,
        depth: int = 50,
        temporal_units: tuple[int, ...] = (0, 2),
        scale_init: float = 0.01,
        temporal_pool: str = "max",
        dropout: float = 0.0,
    ):
        super().__init__()
        if temporal_pool not in ("max", "avg"):
            raise ValueError(f"temporal_pool {temporal_pool!r} must be 'max' or 'avg'")
        if depth not in (50, 101, 152):
            raise ValueError(f"T-ResNet uses bottleneck ResNets (50, 101, 152); got depth {depth}")
        self.backbone = FrameResNet(depth, num_classes, in_channels, dropout)
        self.temporal_pool = temporal_pool
        self.default_input = (in_channels, 16, 224, 224)  # 16-frame stacks (§7.3.3)
        for stage in stage_blocks(self.backbone):
            for index in temporal_units:
                stage[index] = TemporalBottleneck(stage[index], scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone.run_stages(x).mean(dim=(3, 4))  # spatial global average: [B, 2048, T]
        x = x.amax(dim=2) if self.temporal_pool == "max" else x.mean(dim=2)  # Eq. 7.7
        return self.backbone.fc(self.backbone.dropout(x))


@register_model("t_resnet")
def t_resnet(
    num_classes: int = 101,
    in_channels: int = 3,
    scale_init: float = 0.01,
    temporal_pool: str = "max",
    dropout: float = 0.0,
) -> TResNet:
    """T-ResNet-50 (Feichtenhofer 2017 Ch. 7): temporal residual units (1x1x3, scale S = 0.01) as the 1st and 3rd
    unit of each stage, global temporal max pool (``temporal_pool="avg"`` for the ablation)."""
    return TResNet(num_classes, in_channels, 50, (0, 2), scale_init, temporal_pool, dropout)
