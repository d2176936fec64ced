"""MTNet S/M/L: X3D backbones whose blocks are MTBlocks — seed 002, Stergiou thesis §5.3 (Fig. 5.2,
Table 5.1) and §6.4.1 (Table 6.1b); spec ``stergiou.md`` §2.2. ``*_cr`` adds Class Regularisation (ch. 6).

Layout (Table 6.1b, X3D's skeleton from :mod:`kinetoscope.models.x3d`): stem 1x3x3 conv to 24 channels,
spatial stride 2, depth-wise 5x1x1, BN, ReLU; four stages of MTBlocks, inner/out widths 54/24, 108/48,
216/96, 432/192, blocks (3, 5, 11, 7) for S and M, (5, 10, 25, 15) for L; the first block of each stage
strides space by 2 (and projects the shortcut); head 1x1x1 conv to 432, BN, ReLU, global average pool,
FC 2048 + ReLU, dropout, FC N.

MTBlock (Fig. 5.2): ``1x1x1 conv, BN, ReLU -> MTConv 3x3x3 (δ = 7/8) -> 1x1x1 conv, BN -> SR (2-layer GRU)
-> + shortcut -> ReLU``; no squeeze-excitation, no swish. The SR runs on the residual branch's output (after
the last 1x1x1 + BN, before the sum), one SR over all channels (ambiguity 6; the author's code has one per
branch). GRU cells follow Eq. 5.10 (``exact_gru=True``; ``False`` = ``nn.GRU`` fast path).

S and M are one network; they differ in input, 13x182² (S, Table 6.3) vs 16x256² (M, L) — ``default_input``.

Parameter counts (400 classes; tests/test_mtnet.py) vs the thesis (Tables 5.1, 5.5, 6.2, 6.3):

| model  | dense MTConv (default) | depth-wise MTConv | thesis | CR adds (here / thesis) |
|--------|------------------------|-------------------|--------|-------------------------|
| S / M  | 47,963,616             | 8,344,302         | 25.8M  | 737,640 / 0.7M (26.5M)  |
| L      | 102,096,428            | 16,057,418        | 50.1M  | 737,640 / 0.9-1.1M      |

(SR with two-layer GRUs is 4,504,608 of the S/M count. δ sweep, dense, M: δ = 1 58.9M, 7/8 48.0M, 3/4 40.2M,
5/8 35.5M, 1/2 33.9M, 3/8 35.5M, 1/4 40.2M — the thesis' shape (29.7 ... 18.6 ... 21.0M, minimum at 1/2).)

The reported counts are not derivable from the described layout (spec §2.2): dense 3x3x3 MTConvs give
about twice, depth-wise ones (X3D's channel-wise conv) about a third. ``groups`` / ``depthwise`` stay
configurable; the default is the dense conv the thesis describes (Table 6.1b's "3x3x3 MTConv with 54
channels"). The trends hold: L ≈ 2x S/M, CR adds ``2048·360 + 360`` parameters independent of the backbone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kinetoscope.layers.class_reg import AFFECTION_SCHEDULE, ClassRegularisation
from kinetoscope.layers.gates import SqueezeRecursion
from kinetoscope.layers.mtconv import MTConv
from kinetoscope.models.x3d import X3DHead, X3DStem, x3d_shortcut
from kinetoscope.registry import register_model


class MTBlock(nn.Module):
    """MTBlock: ``[B, in_width, T, H, W] -> [B, out_width, T, H/s, W/s]`` (see the module docstring)."""

    def __init__(
        self,
        in_width: int,
        inner_width: int,
        out_width: int,
        spatial_stride: int = 1,
        delta: float = 0.875,
        groups: int = 1,
        cell: str = "gru",
        exact_gru: bool = True,
        share_selection: bool = False,
    ):
        super().__init__()
        stride = (1, spatial_stride, spatial_stride)
        self.shortcut = x3d_shortcut(in_width, out_width, spatial_stride)  # X3D's, BN only on a width change
        self.conv_a = nn.Conv3d(in_width, inner_width, kernel_size=1, bias=False)
        self.bn_a = nn.BatchNorm3d(inner_width)
        self.relu = nn.ReLU(inplace=True)
        self.mtconv = MTConv(
            inner_width, inner_width, 3, stride, delta=delta, groups=groups, share_selection=share_selection
        )
        self.conv_c = nn.Conv3d(inner_width, out_width, kernel_size=1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_width)
        self.sr = SqueezeRecursion(out_width, cell=cell, exact_gru=exact_gru)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.relu(self.bn_a(self.conv_a(x)))
        out = self.bn_c(self.conv_c(self.mtconv(out)))
        return self.relu(self.sr(out) + shortcut)


class MTNet(nn.Module):
    """MTNet. ``forward(x [B, C, T, H, W]) -> logits [B, num_classes]``; H, W >= 32."""

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
        head_width: int = 2048,
        dropout: float = 0.5,
        delta: float = 0.875,
        groups: int = 1,
        depthwise: bool = False,
        cell: str = "gru",
        exact_gru: bool = True,
        share_selection: bool = False,
        class_regularisation: bool = False,
        affection: Sequence[float] = AFFECTION_SCHEDULE,
        default_input: tuple[int, int, int, int] = (3, 16, 256, 256),
    ):
        super().__init__()
        if len(depths) != 4 or len(widths) != 4 or len(affection) != 4:
            raise ValueError(
                f"MTNet needs 4 stages; got depths={tuple(depths)}, widths={tuple(widths)}, "
                f"affection={tuple(affection)}"
            )
        self.default_input = (in_channels, *default_input[1:])
        self.stem = X3DStem(in_channels, stem_width)
        in_width = stem_width
        inner_width = stem_width
        stage_widths = []
        for index, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            inner_width = int(bottleneck_factor * width)
            blocks = []
            for b in range(depth):
                blocks.append(
                    MTBlock(
                        in_width,
                        inner_width,
                        width,
                        spatial_stride=2 if b == 0 else 1,
                        delta=delta,
                        groups=inner_width if depthwise else groups,
                        cell=cell,
                        exact_gru=exact_gru,
                        share_selection=share_selection,
                    )
                )
                in_width = width
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
            stage_widths.append(width)
        self.class_reg: nn.ModuleList | None = None
        if class_regularisation:
            self.class_reg = nn.ModuleList(
                ClassRegularisation(w, head_width, lam) for w, lam in zip(stage_widths, affection, strict=True)
            )
        self.head = X3DHead(in_width, inner_width, head_width)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # X3D's initialisation (He fan-out convs, unit BN, small-normal classifier); recurrent nets and the
        # CR maps keep their own (PyTorch default / Kaiming) initialisation.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head.fc1.weight, 0.0, 0.01)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, 192, T, H/32, W/32]`` (``layer4``, class-regularised with CR)."""
        x = self.stem(x)
        for index, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            x = layer(x)
            if self.class_reg is not None:
                x = self.class_reg[index](x, self.fc.weight)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.head(self.features(x))))


_DEPTHS = {"s": (3, 5, 11, 7), "m": (3, 5, 11, 7), "l": (5, 10, 25, 15)}
_INPUTS = {"s": (3, 13, 182, 182), "m": (3, 16, 256, 256), "l": (3, 16, 256, 256)}


def mtnet(
    variant: str,
    num_classes: int = 400,
    in_channels: int = 3,
    class_regularisation: bool = False,
    **options,
) -> MTNet:
    """Build MTNet-``variant`` ("s" | "m" | "l"); ``options`` go to :class:`MTNet`."""
    if variant not in _DEPTHS:
        raise ValueError(f"unknown MTNet variant {variant!r}; expected one of {', '.join(_DEPTHS)}")
    return MTNet(
        _DEPTHS[variant],
        num_classes=num_classes,
        in_channels=in_channels,
        class_regularisation=class_regularisation,
        default_input=_INPUTS[variant],
        **options,
    )


def _builder(variant: str, class_regularisation: bool):
    def build(
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.5,
        delta: float = 0.875,
        groups: int = 1,
        depthwise: bool = False,
        cell: str = "gru",
        exact_gru: bool = True,
        share_selection: bool = False,
    ) -> MTNet:
        return mtnet(
            variant,
            num_classes,
            in_channels,
            class_regularisation,
            dropout=dropout,
            delta=delta,
            groups=groups,
            depthwise=depthwise,
            cell=cell,
            exact_gru=exact_gru,
            share_selection=share_selection,
        )

    suffix = "_cr" if class_regularisation else ""
    build.__name__ = f"mtnet_{variant}{suffix}"
    build.__doc__ = (
        f"MTNet_{variant.upper()}{' with Class Regularisation' if class_regularisation else ''} "
        f"(seed 002 §5.3{', ch. 6' if class_regularisation else ''}); input {_INPUTS[variant][1]}x"
        f"{_INPUTS[variant][2]}²."
    )
    return build


for _variant in ("s", "m", "l"):
    for _cr in (False, True):
        register_model(f"mtnet_{_variant}{'_cr' if _cr else ''}")(_builder(_variant, _cr))
