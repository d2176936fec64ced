"""C3D-style / VGG-style 3D CNN with configurable widths and depth (Broomé 2022 §5.4).

A stack of blocks ``Conv3d(k x k x k, bias, 'same' padding) -> ReLU -> [2x2x2 pool] -> BatchNorm3d
-> Dropout3d`` (the block order of Broomé 2022's code), then a classifier:
``head="avgpool"`` (global average over time and space -> Linear) or ``head="flatten"`` (flattened final
volume -> Linear, needs ``frames`` and ``input_size``).

Defaults are the 11-layer VGG-style model of Broomé 2022 §5.4 experiment d (Diving48, "23.3M parameters"):
widths 32-64-128-128-128-256-256-256-512-512-512, kernel 5 then 3, max-pool after layers 3, 5, 7 and
10. Its convolutions and BatchNorms hold 23,299,968 parameters; with the average-pool head and 48
classes the model has 23,324,592 — both round to the reported 23.3M; a flatten head at 224² would add
tens of millions, so the thesis figure is read as this head (or the trunk alone). Broomé 2022 §5.4 a-c / e-h
use ``widths=(128,) * 4`` / ``(128,) * 6`` with a max-pool after every layer.

``pooling`` entries: ``"max"`` / ``"avg"`` (2x2x2, stride 2), ``"max_spatial"`` (1x2x2, as C3D's pool1,
Tran et al. 2015) or ``""`` (none). Deviation: pools use ceil mode (output ``ceil(n/2)``) so short clips
and small frames work; Broomé 2022's code instead padded pools by 1 when there were more than four layers,
which changes only the size of a flatten head.
"""

from __future__ import annotations

import torch
from torch import nn

from kinetoscope.registry import register_model

VGG11_WIDTHS = (32, 64, 128, 128, 128, 256, 256, 256, 512, 512, 512)
VGG11_KERNELS = (5, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3)
VGG11_POOLING = ("", "", "max", "", "max", "", "max", "", "", "max", "")

_POOLS = {
    "max": lambda: nn.MaxPool3d(2, stride=2, ceil_mode=True),
    "avg": lambda: nn.AvgPool3d(2, stride=2, ceil_mode=True),
    "max_spatial": lambda: nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2), ceil_mode=True),
    "": nn.Identity,
}


class Conv3dBlock(nn.Sequential):
    """``Conv3d -> ReLU -> pool -> BatchNorm3d -> Dropout3d``: ``[B, C_in, T, H, W] -> [B, C_out, T', H', W']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, pooling: str, dropout: float):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.relu = nn.ReLU(inplace=True)
        self.pool = _POOLS[pooling]()
        self.bn = nn.BatchNorm3d(out_channels)
        self.dropout = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()


class VGG3D(nn.Module):
    """Plain 3D CNN: ``[B, C, T, H, W] -> [B, K]``; ``explain_layer`` is the last block's output."""

    streams = ("rgb",)
    per_frame = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        widths: tuple[int, ...] = VGG11_WIDTHS,
        kernel_sizes: tuple[int, ...] = VGG11_KERNELS,
        pooling: tuple[str, ...] = VGG11_POOLING,
        head: str = "avgpool",
        dropout: float = 0.0,
        frames: int = 32,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if not (len(widths) == len(kernel_sizes) == len(pooling)) or not widths:
            raise ValueError(
                f"c3d: widths ({len(widths)}), kernel_sizes ({len(kernel_sizes)}) and pooling ({len(pooling)}) "
                "must be non-empty and give one entry per layer"
            )
        bad = [p for p in pooling if p not in _POOLS]
        if bad:
            raise ValueError(f"c3d: pooling entries {bad!r} not understood; accepted: {sorted(_POOLS)}")
        if head not in ("avgpool", "flatten"):
            raise ValueError(f"c3d: head={head!r}; accepted: 'avgpool', 'flatten'")
        blocks = []
        channels = in_channels
        for width, kernel, pool in zip(widths, kernel_sizes, pooling, strict=True):
            blocks.append(Conv3dBlock(channels, width, kernel, pool, dropout))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.explain_layer = f"blocks.{len(blocks) - 1}"
        self.head_kind = head
        features = channels
        if head == "flatten":
            t, s = frames, input_size
            for pool in pooling:
                if pool in ("max", "avg"):
                    t, s = -(-t // 2), -(-s // 2)
                elif pool == "max_spatial":
                    s = -(-s // 2)
            features = channels * t * s * s
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        x = x.mean(dim=(2, 3, 4)) if self.head_kind == "avgpool" else x.flatten(1)
        return self.classifier(self.dropout(x))


@register_model("c3d")
def c3d(num_classes: int, in_channels: int = 3, widths: tuple[int, ...] = VGG11_WIDTHS,
        kernel_sizes: tuple[int, ...] = VGG11_KERNELS, pooling: tuple[str, ...] = VGG11_POOLING,
        head: str = "avgpool", dropout: float = 0.0, frames: int = 32, input_size: int = 224) -> VGG3D:
    """VGG-style 3D CNN; defaults = Broomé 2022's 11-layer Diving48 model (Broomé 2022 §5.4 d, 23.3M parameters).

    ``frames`` and ``input_size`` matter only for ``head="flatten"``.
    """
    return VGG3D(num_classes, in_channels, tuple(widths), tuple(kernel_sizes), tuple(pooling), head, dropout,
                 frames, input_size)
