"""MTNet S/M/L: X3D backbones whose blocks are MTBlocks — Stergiou 2021 §5.3 (Fig. 5.2, Table 5.1) and
§6.4.1 (Table 6.1b). ``*_cr`` adds Class Regularisation (Stergiou 2021 ch. 6).

Layout (Table 6.1b, X3D's skeleton from :mod:`kinetoscope.models.x3d`): stem 1x3x3 conv to 24 channels,
spatial stride 2, depth-wise 5x1x1, BN, ReLU; four stages of MTBlocks, inner/out widths 54/24, 108/48,
216/96, 432/192, blocks (3, 5, 11, 7) for S and M, (5, 10, 25, 15) for L; the first block of each stage
strides space by 2 (and projects the shortcut); head 1x1x1 conv to 432, BN, ReLU, global average pool,
FC 2048 + ReLU, dropout, FC N.

MTBlock (Fig. 5.2): ``1x1x1 conv, BN, ReLU -> MTConv (δ = 7/8) -> 1x1x1 conv, BN -> SR (two-layer GRU)
-> + shortcut -> ReLU``; no squeeze-excitation, no swish. The SR runs on the residual branch's output (after
the last 1x1x1 + BN, before the sum), one SR over all channels (docs/deviations.md, "MTBlock SR input").
GRU cells follow Eq. 5.10 (``exact_gru=True``; ``False`` = ``nn.GRU`` fast path).

**(2+1)D MTConvs** (default, ``factorised=True``): Table 6.1b heads its MTNet_M column "(2+1)D MTNet_M".
Each MTConv branch's 3x3x3 conv is a 1x3x3 conv followed by a 3x1x1 conv, intermediate width = output
width, nothing in between (:mod:`kinetoscope.layers.mtconv`). That layout has exactly the thesis' size:
MTNet_M **25,861,356** parameters at 400 classes (Tables 5.1, 5.6, 6.2: 25.8M), and its δ sweep follows
Table 5.6 within 1.5M with the minimum at δ = 1/2. ``factorised=False`` gives the dense 3x3x3 MTConvs
(47,963,616 for S/M); ``depthwise=True`` X3D's channel-wise conv per branch.

S and M are one network; they differ in input, 13x182² (S, Table 6.3) vs 16x256² (M, L) — ``default_input``.

Parameter counts at 400 classes (tests/test_mtnet.py) against Stergiou 2021:

| model                      | here       | thesis                                        |
|----------------------------|------------|-----------------------------------------------|
| S / M                      | 25,861,356 | 25.8M (Tables 5.1, 5.6, 6.2, 6.3)             |
| S / M + CR                 | 26,598,996 | 26.5M (Tables 6.2, 6.3); "+0.76M" (text)      |
| L                          | 54,098,528 | 50.1M (Tables 5.1, 5.6, 6.2)                  |
| M δ = 1, 7/8, 3/4, 5/8     | 30.6, 25.9, 22.5, 20.4M | 29.7, 25.8, 21.8, 19.3M (Table 5.6) |
| M δ = 1/2, 3/8, 1/4        | 19.8, 20.5, 22.5M       | 18.6, 19.2, 21.0M (Table 5.6)       |
| L δ = 1, 7/8, 3/4          | 64.4, 54.1, 46.7M       | 53.5, 50.1, 45.3M (Table 5.6)       |
| L δ = 1/2, 3/8, 1/4        | 40.9, 42.3, 46.8M       | 42.7, 45.3, 47.8M (Table 5.6)       |
| M, SR cell RNN / LSTM / GRU | 22.9 / 27.4 / 25.9M    | 24.3 / 26.5 / 25.8M (Table 5.7)     |

Where the thesis disagrees with itself (docs/deviations.md, "MTNet parameter counts"):

* **MTNet_L**: the layout that gives M the reported 25.8M gives L (Table 6.1b: depths 5/10/25/15, the
  same widths) 54.1M, not the reported 50.1M: L/M is 2.09 here vs 1.94 reported, and Table 5.6's L row is
  flatter than its M row (δ = 1 is +7% over 7/8 for L, +15% for M). L's count here is the layout's.
* **Table 5.7's cell-type deltas** (LSTM +0.7M, RNN -1.5M vs GRU) are those of a *one-layer* recurrent net
  (``sr_layers=1``: +0.75M / -1.50M), while the GRU total 25.8M needs a *two-layer* one (``sr_layers=2``,
  the default: +1.50M / -3.00M), as do the SR counts of Table 4.2 (r3d-34: +20.18M = two LSTM layers).
* **CR**: adds ``2048·360 + 360 = 737,640`` parameters independent of the backbone (text: "+0.76M",
  tables: +0.7M for S/M, +1.1M / +0.9M for L in Tables 6.2 / 6.3).
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
        *,
        delta: float = 0.875,
        groups: int = 1,
        factorised: bool = True,
        cell: str = "gru",
        sr_layers: int = 2,
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
            inner_width,
            inner_width,
            3,
            stride,
            delta=delta,
            groups=groups,
            factorised=factorised,
            share_selection=share_selection,
        )
        self.conv_c = nn.Conv3d(inner_width, out_width, kernel_size=1, bias=False)
        self.bn_c = nn.BatchNorm3d(out_width)
        self.sr = SqueezeRecursion(out_width, cell=cell, num_layers=sr_layers, exact_gru=exact_gru)

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
        *,
        stem_width: int = 24,
        widths: Sequence[int] = (24, 48, 96, 192),
        bottleneck_factor: float = 2.25,
        head_width: int = 2048,
        dropout: float = 0.5,
        delta: float = 0.875,
        groups: int = 1,
        depthwise: bool = False,
        factorised: bool = True,
        cell: str = "gru",
        sr_layers: int = 2,
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
                        factorised=factorised,
                        cell=cell,
                        sr_layers=sr_layers,
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
        factorised: bool = True,
        cell: str = "gru",
        sr_layers: int = 2,
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
            factorised=factorised,
            cell=cell,
            sr_layers=sr_layers,
            exact_gru=exact_gru,
            share_selection=share_selection,
        )

    suffix = "_cr" if class_regularisation else ""
    build.__name__ = f"mtnet_{variant}{suffix}"
    build.__doc__ = (
        f"MTNet_{variant.upper()}{' with Class Regularisation' if class_regularisation else ''} "
        f"(Stergiou 2021 §5.3{', ch. 6' if class_regularisation else ''}); (2+1)D MTConvs by default; "
        f"input {_INPUTS[variant][1]}x{_INPUTS[variant][2]}²."
    )
    return build


for _variant in ("s", "m", "l"):
    for _cr in (False, True):
        register_model(f"mtnet_{_variant}{'_cr' if _cr else ''}")(_builder(_variant, _cr))
