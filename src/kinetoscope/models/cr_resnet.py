"""Video ResNets with Class Regularisation after each stage (Stergiou 2021 Ch. 6, Table 6.4), and the
wide R3D-50 they are compared on.

The backbone is :class:`kinetoscope.models.resnet3d.VideoResNet` (3x7x7 stem, widths 64/128/256/512,
expansion-1 bottlenecks at depths 50/101 — the layout of the thesis's counts). :class:`CRResNet` adds one
:class:`~kinetoscope.layers.class_reg.ClassRegularisation` after each of the four stages, fed with the
classifier's weight ``W [N, 512]``, affection rates λ = 0.9, 0.8, 0.7, 0.6 (Stergiou 2021 Table 6.1); with
``class_regularisation=False`` it is the plain network, so one class builds both columns of a pairwise
comparison. Wide R3D-50 (Zagoruyko & Komodakis 2016, as wide-ResNet-50 in Stergiou 2021 §6.4) doubles
every bottleneck's inner width and keeps its output width.

Parameters at 400 classes (tests/test_cr_resnet.py) against Table 6.4:

| model          | plain       | thesis | with CR     | thesis |
|----------------|-------------|--------|-------------|--------|
| r3d_50         | 36,724,688  | 36.7M  | 37,217,168  | 37.6M  |
| r2plus1d_50    | 34,863,287  | 34.8M  | 35,355,767  | 35.7M  |
| wide_r3d_50    | 140,937,936 | 140.9M | 141,430,416 | 143.4M |
| r3d_101        | 69,060,048  | 69.1M  | 69,552,528  | 70.0M  |

The plain networks match. CR adds ``Σ_l (512·C_l + C_l)`` = 492,480 parameters (512 = the classifier's
input, C_l = 64, 128, 256, 512) to every one of them; the thesis reports +0.9M, and +2.5M for the wide
network, which no ``C'·C`` map over these widths gives (docs/deviations.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kinetoscope.layers.class_reg import AFFECTION_SCHEDULE, ClassRegularisation
from kinetoscope.models.resnet3d import (
    _DEPTHS,
    _FAMILIES,
    Block,
    Bottleneck,
    ConvBuilder,
    VideoResNet,
    mid_channels,
)
from kinetoscope.registry import register_model

STAGES = ("layer1", "layer2", "layer3", "layer4")


class WideBottleneck(Bottleneck):
    """Bottleneck with twice the inner width: 1x1x1 to ``2·planes`` -> builder conv ``2·planes`` -> 1x1x1 to
    ``planes · expansion`` (wide-ResNet-50-2's rule)."""

    width_factor = 2

    def __init__(
        self,
        in_planes: int,
        planes: int,
        conv_builder: ConvBuilder,
        stride: int = 1,
        downsample: nn.Module | None = None,
        expansion: int = 1,
    ):
        super().__init__(in_planes, planes, conv_builder, stride, downsample, expansion)
        inner = planes * self.width_factor
        self.conv1 = nn.Conv3d(in_planes, inner, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(inner)
        self.conv2 = conv_builder(inner, inner, mid_channels(in_planes, inner), stride)
        self.bn2 = nn.BatchNorm3d(inner)
        self.conv3 = nn.Conv3d(inner, planes * expansion, kernel_size=1, bias=False)


class CRResNet(VideoResNet):
    """``VideoResNet`` with Class Regularisation after each stage (Stergiou 2021 §6.3);
    ``forward(x [B, C, T, H, W]) -> [B, K]``. ``class_reg`` is ``None`` when built without CR."""

    def __init__(
        self,
        block: Block,
        conv_builders: Sequence[ConvBuilder],
        layers: Sequence[int],
        factorised_stem: bool,
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.0,
        *,
        class_regularisation: bool = True,
        affection: Sequence[float] = AFFECTION_SCHEDULE,
    ):
        super().__init__(block, conv_builders, layers, factorised_stem, num_classes, in_channels, dropout)
        if len(affection) != 4:
            raise ValueError(f"affection needs one λ per stage (4), got {tuple(affection)}")
        self.class_reg: nn.ModuleList | None = None
        if class_regularisation:
            widths = [_out_channels(getattr(self, name)[-1]) for name in STAGES]
            self.class_reg = nn.ModuleList(
                ClassRegularisation(width, self.fc.in_features, lam)
                for width, lam in zip(widths, affection, strict=True)
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for index, name in enumerate(STAGES):
            x = getattr(self, name)(x)
            if self.class_reg is not None:
                x = self.class_reg[index](x, self.fc.weight)
        return x


def _out_channels(block: nn.Module) -> int:
    """Output channels of a residual block (its last BatchNorm's)."""
    bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
    return bn.num_features


def cr_resnet(
    family: str,
    depth: int,
    num_classes: int = 400,
    in_channels: int = 3,
    dropout: float = 0.0,
    *,
    wide: bool = False,
    class_regularisation: bool = True,
    affection: Sequence[float] = AFFECTION_SCHEDULE,
) -> CRResNet:
    """``family`` ("r3d" | "r2plus1d") at ``depth`` (50 | 101), optionally wide, with or without CR."""
    if family not in ("r3d", "r2plus1d") or depth not in (50, 101):
        raise ValueError(f"Class Regularisation ResNets: family r3d | r2plus1d, depth 50 | 101; got {family}, {depth}")
    block, layers = _DEPTHS[depth]
    builders, factorised_stem = _FAMILIES[family]
    return CRResNet(WideBottleneck if wide else block, builders, layers, factorised_stem, num_classes, in_channels,
                    dropout, class_regularisation=class_regularisation, affection=tuple(affection))


@register_model("wide_r3d_50")
def wide_r3d_50(num_classes: int = 400, in_channels: int = 3, dropout: float = 0.0) -> CRResNet:
    """Wide R3D-50 (bottleneck inner width doubled; Stergiou 2021 Table 6.4, 140.9M): 140,937,936 parameters."""
    return cr_resnet("r3d", 50, num_classes, in_channels, dropout, wide=True, class_regularisation=False)


def _cr_builder(family: str, depth: int, wide: bool):
    def build(
        num_classes: int = 400,
        in_channels: int = 3,
        dropout: float = 0.0,
        affection: tuple[float, float, float, float] = AFFECTION_SCHEDULE,
    ) -> CRResNet:
        return cr_resnet(family, depth, num_classes, in_channels, dropout, wide=wide, affection=affection)

    name = f"{'wide_' if wide else ''}{family}_{depth}_cr"
    build.__name__ = name
    build.__doc__ = (f"{name[:-3]} with Class Regularisation after each stage (Stergiou 2021 §6.3, Table 6.4); "
                     "``affection``: λ per stage (1 = no effect).")
    return build


for _family, _depth, _wide in (("r3d", 50, False), ("r2plus1d", 50, False), ("r3d", 50, True), ("r3d", 101, False)):
    register_model(f"{'wide_' if _wide else ''}{_family}_{_depth}_cr")(_cr_builder(_family, _depth, _wide))
