"""SRTG ResNets: R3D and R(2+1)D at depths 34/50/101 with one Squeeze and Recursion Temporal Gate per
residual block (Stergiou 2021 §4.3.3, Fig. 4.5).

The backbone is :class:`kinetoscope.models.resnet3d.VideoResNet` unchanged (3x7x7 stem or its (2+1)D
factorisation, widths 64/128/256/512, expansion-1 bottlenecks at 50/101); only the block differs:
:class:`SRTGBasicBlock` / :class:`SRTGBottleneck` subclass the backbone's blocks and add one
:class:`~kinetoscope.layers.gates.SRTG` (two-layer LSTM, hidden = the channels it sees) at ``placement``:

| placement | where (Fig. 4.5)                                   | blocks          | SR width      |
|-----------|----------------------------------------------------|-----------------|---------------|
| start     | on the block input                                 | basic, bottleneck | block input  |
| top       | after conv1 (+BN, ReLU)                            | bottleneck      | stage width   |
| mid       | after conv1 (basic) / conv2 (bottleneck), post-ReLU| basic, bottleneck | stage width |
| end       | after the last conv + BN, before the residual sum  | bottleneck      | stage width   |
| res       | on every shortcut (identity or projection)         | basic, bottleneck | stage width |
| final     | after the sum and ReLU (**default**, best in Table 4.1) | basic, bottleneck | stage width |

"Top" feeds "the final conv" in the thesis, but conv2 comes next in a bottleneck: placed after conv1
(see docs/deviations.md, 'SRTG placement'). "Res" applies to every shortcut (the author's public code:
projections only).

Gate: ``gate=True`` (default) is the thesis' SRTG — fuse only when ``pool_s(a)`` and the LSTM's hidden
states are cycle-consistent; ``gate=False`` is the inactive state, plain SR (always fuse), which is what
the author's released constructors build.

Parameter counts at 400 classes (tests/test_srtg.py; SR adds exactly ``Σ_blocks 2(8C² + 8C)``, 20,179,968
at depths 34/50 and 38,075,392 at 101), against the thesis (Tables 4.2, 4.5):

| model             | here        | thesis  |
|-------------------|-------------|---------|
| srtg_r3d_34       | 83,861,072  | 83.86M  |
| srtg_r3d_50       | 56,904,656  | 56.90M  |
| srtg_r3d_101      | 107,135,440 | 107.14M |
| srtg_r2plus1d_34  | 82,011,629  | 82.01M  |
| srtg_r2plus1d_50  | 55,043,255  | 55.04M  |
| srtg_r2plus1d_101 | 105,293,623 | 105.29M |
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from kinetoscope.layers.gates import SRTG
from kinetoscope.models.resnet3d import (
    _DEPTHS,
    _FAMILIES,
    BasicBlock,
    Bottleneck,
    ConvBuilder,
    VideoResNet,
)
from kinetoscope.registry import register_model

PLACEMENTS = ("start", "top", "mid", "end", "res", "final")
BOTTLENECK_ONLY = ("top", "end")


def _check_placement(placement: str, bottleneck: bool) -> None:
    if placement not in PLACEMENTS:
        raise ValueError(f"SRTG placement={placement!r}; expected one of {', '.join(PLACEMENTS)}")
    if not bottleneck and placement in BOTTLENECK_ONLY:
        raise ValueError(
            f"SRTG placement={placement!r} exists only in bottleneck blocks (depths 50/101); basic blocks "
            f"(depth 34) take {', '.join(p for p in PLACEMENTS if p not in BOTTLENECK_ONLY)}"
        )


class SRTGBasicBlock(BasicBlock):
    """Basic block (two builder convs) with one SRTG at ``placement`` (start | mid | res | final)."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        conv_builder: ConvBuilder,
        stride: int = 1,
        downsample: nn.Module | None = None,
        expansion: int = 1,
        *,
        placement: str = "final",
        cell: str = "lstm",
        gate: bool = True,
        temperature: float = 1.0,
    ):
        super().__init__(in_planes, planes, conv_builder, stride, downsample, expansion)
        _check_placement(placement, bottleneck=False)
        self.placement = placement
        self.srtg = SRTG(in_planes if placement == "start" else planes, cell, gate, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.placement == "start":
            x = self.srtg(x)
        shortcut = x if self.downsample is None else self.downsample(x)
        if self.placement == "res":
            shortcut = self.srtg(shortcut)
        out = self.relu(self.bn1(self.conv1(x)))
        if self.placement == "mid":
            out = self.srtg(out)
        out = self.relu(self.bn2(self.conv2(out)) + shortcut)
        return self.srtg(out) if self.placement == "final" else out


class SRTGBottleneck(Bottleneck):
    """Bottleneck (1x1x1, builder, 1x1x1) with one SRTG at ``placement`` (any of :data:`PLACEMENTS`)."""

    def __init__(
        self,
        in_planes: int,
        planes: int,
        conv_builder: ConvBuilder,
        stride: int = 1,
        downsample: nn.Module | None = None,
        expansion: int = 1,
        *,
        placement: str = "final",
        cell: str = "lstm",
        gate: bool = True,
        temperature: float = 1.0,
    ):
        super().__init__(in_planes, planes, conv_builder, stride, downsample, expansion)
        _check_placement(placement, bottleneck=True)
        self.placement = placement
        width = {"start": in_planes, "top": planes, "mid": planes}.get(placement, planes * expansion)
        self.srtg = SRTG(width, cell, gate, temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        place = self.placement
        if place == "start":
            x = self.srtg(x)
        shortcut = x if self.downsample is None else self.downsample(x)
        if place == "res":
            shortcut = self.srtg(shortcut)
        out = self.relu(self.bn1(self.conv1(x)))
        if place == "top":
            out = self.srtg(out)
        out = self.relu(self.bn2(self.conv2(out)))
        if place == "mid":
            out = self.srtg(out)
        out = self.bn3(self.conv3(out))
        if place == "end":
            out = self.srtg(out)
        out = self.relu(out + shortcut)
        return self.srtg(out) if place == "final" else out


class SRTGResNet(VideoResNet):
    """:class:`VideoResNet` whose blocks carry an SRTG. ``forward(x [B,C,T,H,W]) -> logits [B, K]``.

    ``open_fraction()`` reports the share of (block, sample) gates open in the last forward.
    """

    def __init__(
        self,
        family: str,
        depth: int,
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.0,
        placement: str = "final",
        cell: str = "lstm",
        gate: bool = True,
        temperature: float = 1.0,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
    ):
        if family not in ("r3d", "r2plus1d"):
            raise ValueError(f"SRTG family={family!r}; expected 'r3d' or 'r2plus1d'")
        if depth not in (34, 50, 101):
            raise ValueError(f"SRTG depth={depth}; expected 34, 50 or 101")
        plain_block, layers = _DEPTHS[depth]
        block_class = SRTGBottleneck if plain_block is Bottleneck else SRTGBasicBlock
        _check_placement(placement, bottleneck=block_class is SRTGBottleneck)
        block = functools.partial(
            block_class, placement=placement, cell=cell, gate=gate, temperature=temperature
        )
        builders, factorised_stem = _FAMILIES[family]
        super().__init__(
            block, builders, layers, factorised_stem, num_classes, in_channels, dropout, widths=widths
        )
        self.placement = placement

    def open_fraction(self) -> float:
        masks = [m.last_open.float() for m in self.modules() if isinstance(m, SRTG) and m.last_open is not None]
        return float(torch.cat(masks).mean()) if masks else float("nan")


def _builder(family: str, depth: int):
    def build(
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.0,
        placement: str = "final",
        cell: str = "lstm",
        gate: bool = True,
        temperature: float = 1.0,
    ) -> SRTGResNet:
        return SRTGResNet(family, depth, num_classes, in_channels, dropout, placement, cell, gate, temperature)

    build.__name__ = f"srtg_{family}_{depth}"
    build.__doc__ = (
        f"SRTG {family}-{depth} (Stergiou 2021 §4.3): one SRTG per block at ``placement`` "
        f"({' | '.join(PLACEMENTS)}; default final), LSTM cells, cycle-consistency ``gate``."
    )
    return build


for _family in ("r3d", "r2plus1d"):
    for _depth in (34, 50, 101):
        register_model(f"srtg_{_family}_{_depth}")(_builder(_family, _depth))
