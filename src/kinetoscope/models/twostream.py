"""Two-stream ConvNet fusion (Feichtenhofer 2017 Ch. 3, Feichtenhofer et al. 2016a).

Two frame-wise ConvNets — appearance on RGB chunks ``[B, 3, T, H, W]``, motion on stacks of L optical
flows ``[B, 2L, T, H, W]`` — are fused at a chosen layer (§3.3.2) by one of the spatial fusion
functions of §3.3.1 (:class:`kinetoscope.layers.twostream.SpatialFusion`), and over time (§3.3.3) by
nothing (2D pooling: the chunk predictions are averaged), 3D max pooling, or 3D conv fusion + 3D
pooling. As in the proposed architecture (§3.3.4, Fig. 3.4) the motion tower is kept by default and
also 3D-pooled; the fused tower and the motion tower each have a classifier, and ``forward`` averages
their pre-softmax scores (the test-time rule; training with one loss per tower is available through
:meth:`TwoStreamFusion.forward_towers`). ``fusion="late"`` is the two-stream baseline: sum fusion at
the softmax layer (average of the two networks' scores).

Backbones. The thesis fuses VGG-M-2048 / VGG-16 towers; kinetoscope fuses its frame-wise ResNets
(:class:`FrameResNet`, the ResNet-50 of Ch. 4, 5 and 7 applied to every chunk), so the Table 3.1 counts
(VGG-M: 97.31M sum, 97.58M conv at ReLU5) are not reproduced; the *differences* are: conv fusion adds
``2C·C + C`` parameters over sum fusion, concat fusion at the last layer doubles the classifier input.
``fusion_layer`` names the ResNet stage after which to fuse (``layer4`` ≈ ReLU5, the thesis's best).

Motion input. ``flow`` may already hold 2L channels, or the kinetoscope batch layout ``[B, 2, T, H, W]``
(one flow per sampled frame); the latter is stacked to 2L channels with :func:`stack_flow` from the L
flows of the clip around each chunk (so L consecutive flows only when the clip is sampled densely).

Deviations: the bilinear fusion feeds a linear classifier trained with the same loss rather than a
linear SVM; 3D pooling uses the *(code)* kernel ``(5, 2, 2)``/stride 2, clamped to short clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.layers.init import he_fan_out_init_
from kinetoscope.layers.twostream import FUSION_KINDS, SpatialFusion, pool3d, stack_flow
from kinetoscope.models.resnet3d import BasicBlock, Bottleneck, Conv3DNoTemporal, VideoResNet
from kinetoscope.registry import register_model

STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")
FRAME_RESNET_DEPTHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class FrameStem(nn.Module):
    """ResNet conv1 + pool1 applied per frame: 1x7x7 conv stride 2 -> BN -> ReLU -> 1x3x3 max pool stride 2.

    ``[B, C, T, H, W] -> [B, 64, T, H/4, W/4]`` (Feichtenhofer 2017 Table 4.1: ``7x7x1, 64``, ``3x3x1 max stride 2``).
    """

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, width, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class FrameResNet(VideoResNet):
    """An ImageNet-style 2D ResNet (He et al. 2016a) run on every frame of ``[B, C, T, H, W]``.

    Built from :mod:`kinetoscope.models.resnet3d`'s blocks with the ``Conv3DNoTemporal`` (1x3x3) conv
    builder, bottleneck expansion 4 and the 2D stem, so its parameters are those of the 2D network
    (ResNet-50: 25,557,032 at 1000 classes and 3 input channels) and a 2D checkpoint maps onto it by
    unsqueezing a time axis. ``stride_in_1x1=True`` (default) puts each stage's stride 2 in the first 1x1
    conv as the original ResNet (the Caffe/MatConvNet models Feichtenhofer 2017 builds on) does; ``False`` keeps
    it in the 3x3 conv (torchvision's "v1.5"). The parameter count is the same either way. ``width``
    (default 64) is the stem's width; the stages have 1, 2, 4, 8 times it (a narrower trunk for CPU runs).

    ``forward(x) -> [B, num_classes]`` averages over frames and positions (2D pooling + prediction
    averaging). :meth:`run_stages` runs a contiguous range of :data:`STAGES`.
    """

    explain_layer = "layer4"

    def __init__(
        self,
        depth: int = 50,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
        stride_in_1x1: bool = True,
        *,
        width: int = 64,
    ):
        if depth not in FRAME_RESNET_DEPTHS:
            raise ValueError(
                f"unknown frame ResNet depth {depth}; expected one of "
                f"{', '.join(map(str, FRAME_RESNET_DEPTHS))}"
            )
        block, layers = FRAME_RESNET_DEPTHS[depth]
        expansion = 4 if block is Bottleneck else 1
        builders = (Conv3DNoTemporal,) * 4
        widths = (width, 2 * width, 4 * width, 8 * width)
        super().__init__(block, builders, layers, False, num_classes, in_channels, dropout, expansion, widths)
        self.depth = depth
        self.width = width
        self.block = block
        self.stage_depths = tuple(layers)
        self.stride_in_1x1 = stride_in_1x1
        self.stem = FrameStem(in_channels, width)
        self.default_input = (in_channels, 16, 224, 224)
        for name in ("layer2", "layer3", "layer4"):
            self._place_stride(getattr(self, name))
        he_fan_out_init_(self)

    def _place_stride(self, stage: nn.Sequential) -> None:
        first = stage[0]
        if self.stride_in_1x1 and isinstance(first, Bottleneck):
            first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1, 1)

    @property
    def stage_channels(self) -> dict[str, int]:
        """Output channels of each of :data:`STAGES`."""
        e, w = self.expansion, self.width
        return {"stem": w, "layer1": w * e, "layer2": 2 * w * e, "layer3": 4 * w * e, "layer4": 8 * w * e}

    def rebuild_stage(self, name: str, in_channels: int) -> None:
        """Rebuild stage ``name`` (``layer2``...``layer4``) for ``in_channels`` inputs, freshly initialised
        (used after concatenation fusion, whose 2C channels feed the next layer, §3.3.1)."""
        index = STAGES.index(name)
        planes = self.width * 2 ** (index - 1)
        self.in_planes = in_channels
        stage = self._make_layer(self.block, Conv3DNoTemporal, planes, self.stage_depths[index - 1],
                                 1 if index == 1 else 2)
        self._place_stride(stage)
        setattr(self, name, stage)
        for m in stage.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def run_stages(self, x: torch.Tensor, start: str = "stem", stop: str = "layer4") -> torch.Tensor:
        """Apply the stages from ``start`` to ``stop`` inclusive (names from :data:`STAGES`)."""
        for name in STAGES[STAGES.index(start) : STAGES.index(stop) + 1]:
            x = getattr(self, name)(x)
        return x


def frame_resnet_depth(backbone: str) -> int:
    """``"resnet50" -> 50``; errors list the valid names."""
    valid = [f"resnet{d}" for d in FRAME_RESNET_DEPTHS]
    if backbone not in valid:
        raise ValueError(f"unknown two-stream backbone {backbone!r}; expected one of {', '.join(valid)}")
    return int(backbone.removeprefix("resnet"))


def prepare_flow(flow: torch.Tensor, flow_frames: int) -> torch.Tensor:
    """Motion-stream input ``[B, 2L, T, H, W]`` from a 2L-channel stack or a ``[B, 2, T, H, W]`` flow clip."""
    channels = 2 * flow_frames
    if flow.shape[1] == channels:
        return flow
    if flow.shape[1] == 2:
        return stack_flow(flow, flow_frames)
    raise ValueError(
        f"motion stream expects flow with 2 (u, v) or 2L = {channels} channels; got {tuple(flow.shape)}"
    )


class TwoStreamFusion(nn.Module):
    """Appearance and motion frame-ResNets fused at ``fusion_layer`` (Feichtenhofer 2017 Ch. 3; module docstring).

    ``forward(rgb [B, 3, T, H, W], flow [B, 2|2L, T, H, W]) -> logits [B, num_classes]``.
    """

    streams = ("rgb", "flow")
    per_frame = False

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        backbone: str = "resnet50",
        fusion: str = "conv",
        fusion_layer: str = "layer4",
        temporal_fusion: Literal["none", "pool3d", "conv3d"] = "pool3d",
        keep_motion_tower: bool = True,
        flow_frames: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        if fusion not in (*FUSION_KINDS, "late"):
            raise ValueError(f"unknown fusion {fusion!r}; expected one of {', '.join(FUSION_KINDS)}, late")
        if fusion_layer not in STAGES[1:]:
            raise ValueError(f"fusion_layer {fusion_layer!r} must be one of {', '.join(STAGES[1:])}")
        if temporal_fusion not in ("none", "pool3d", "conv3d"):
            raise ValueError(f"temporal_fusion {temporal_fusion!r} must be one of none, pool3d, conv3d")
        if temporal_fusion == "conv3d" and fusion != "conv":
            raise ValueError(f"temporal_fusion='conv3d' (3D conv fusion) needs fusion='conv', not {fusion!r}")
        if fusion == "bilinear" and fusion_layer != "layer4":
            raise ValueError("bilinear fusion discards space; it needs fusion_layer='layer4'")
        depth = frame_resnet_depth(backbone)
        self.fusion_kind = fusion
        self.fusion_layer = fusion_layer
        self.temporal_fusion = temporal_fusion
        self.flow_frames = flow_frames
        self.flow_channels = 2 * flow_frames
        self.keep_motion_tower = keep_motion_tower or fusion == "late"
        self.appearance = FrameResNet(depth, num_classes, in_channels, dropout)
        self.motion = FrameResNet(depth, num_classes, self.flow_channels, dropout)
        self.default_input = (in_channels, 5, 224, 224)  # T = 5 chunks (§3.5)
        channels = self.appearance.stage_channels[fusion_layer]
        last = fusion_layer == "layer4"
        self.fusion: SpatialFusion | None = None
        if fusion != "late":
            kernel = (3, 3, 3) if temporal_fusion == "conv3d" else (1, 1, 1)
            self.fusion = SpatialFusion(fusion, channels, kernel=kernel)  # type: ignore[arg-type]
            widened = self.fusion.out_channels
            if fusion == "concat" and not last:
                nxt = STAGES[STAGES.index(fusion_layer) + 1]
                self.appearance.rebuild_stage(nxt, widened)
            if last:
                self.appearance.fc = nn.Linear(widened, num_classes)
                nn.init.normal_(self.appearance.fc.weight, 0.0, 0.01)
                nn.init.zeros_(self.appearance.fc.bias)
        if not self.keep_motion_tower:  # truncate the motion tower after the fusion layer (Fig. 3.1 left)
            for name in STAGES[STAGES.index(fusion_layer) + 1 :]:
                setattr(self.motion, name, nn.Identity())
            self.motion.fc = nn.Identity()
        self.explain_layer = "fusion" if last and fusion not in ("late", "bilinear") else "appearance.layer4"

    def _head(self, tower: FrameResNet, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:  # bilinear: [B, C², T] -> average the chunks
            return tower.fc(tower.dropout(x.mean(dim=2)))
        if self.temporal_fusion != "none":
            x = pool3d(x)
        return tower.fc(tower.dropout(F.adaptive_avg_pool3d(x, 1).flatten(1)))

    def forward_towers(self, rgb: torch.Tensor, flow: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each tower's logits ``[B, K]``: ``fusion`` (or ``appearance`` for late fusion) and ``motion`` (if
        kept) — the two losses of §3.3.4."""
        flow = prepare_flow(flow, self.flow_frames)
        xa = self.appearance.run_stages(rgb, "stem", self.fusion_layer)
        xm = self.motion.run_stages(flow, "stem", self.fusion_layer)
        out: dict[str, torch.Tensor] = {}
        if self.fusion is None:
            out["appearance"] = self._head(self.appearance, self._rest(self.appearance, xa))
        else:
            out["fusion"] = self._head(self.appearance, self._rest(self.appearance, self.fusion(xa, xm)))
        if self.keep_motion_tower:
            out["motion"] = self._head(self.motion, self._rest(self.motion, xm))
        return out

    def _rest(self, tower: FrameResNet, x: torch.Tensor) -> torch.Tensor:
        if self.fusion_layer == "layer4" or x.ndim == 3:
            return x
        return tower.run_stages(x, STAGES[STAGES.index(self.fusion_layer) + 1], "layer4")

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        towers = self.forward_towers(rgb, flow)
        return torch.stack(list(towers.values())).mean(dim=0)


@register_model("twostream")
def twostream(
    num_classes: int = 101,
    in_channels: int = 3,
    backbone: str = "resnet50",
    fusion: str = "conv",
    fusion_layer: str = "layer4",
    temporal_fusion: str = "pool3d",
    keep_motion_tower: bool = True,
    flow_frames: int = 10,
    dropout: float = 0.0,
) -> TwoStreamFusion:
    """Two-stream fusion network (Feichtenhofer 2017 Ch. 3). Defaults follow the proposed architecture (§3.3.4) —
    conv fusion after the last conv stage, 3D pooling, motion tower kept, L = 10 flows — but with a 1x1x1
    fusion kernel: the 3x3x3 kernel of Eq. 3.6 (``temporal_fusion="conv3d"``) maps 2·2048 -> 2048
    channels on ResNet-50 and alone holds 226M parameters (14M on the thesis's VGG-16, 1024 -> 512).
    ``fusion``: sum | max | concat | conv | bilinear | late; ``fusion_layer``: layer1..layer4;
    ``temporal_fusion``: none | pool3d | conv3d; ``backbone``: resnet18/34/50/101/152 (frame-wise)."""
    return TwoStreamFusion(
        num_classes, in_channels, backbone, fusion, fusion_layer, temporal_fusion,  # type: ignore[arg-type]
        keep_motion_tower, flow_frames, dropout,
    )


def residual_branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual mapping F(x) of a :class:`Bottleneck` or :class:`BasicBlock` (no shortcut or ReLU)."""
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn1(block.conv1(x)))
        out = block.relu(block.bn2(block.conv2(out)))
        return block.bn3(block.conv3(out))
    if isinstance(block, BasicBlock):
        return block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    raise TypeError(f"residual_branch needs a Bottleneck or BasicBlock; got {type(block).__name__}")


def pre_activation(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A residual unit's output before its final ReLU: ``shortcut(x) + F(x)``."""
    shortcut = x if block.downsample is None else block.downsample(x)
    return shortcut + residual_branch(block, x)


def stage_blocks(tower: FrameResNet) -> Sequence[nn.Sequential]:
    return [tower.layer1, tower.layer2, tower.layer3, tower.layer4]
