"""Spatiotemporal residual networks, ST-ResNet (Feichtenhofer 2017 Ch. 4, Feichtenhofer et al. 2016b), and the
two-stream cross-connected ResNet they share with the
multiplier networks of Ch. 5 (:mod:`kinetoscope.models.st_multiplier`).

Two frame-wise ResNet-50 streams (:class:`~kinetoscope.models.twostream.FrameResNet`): appearance on RGB
chunks, motion on 2L = 20 flow channels. Before the **second residual unit of each stage** conv2_x ...
conv5_x the motion stream feeds the appearance stream's residual branch (Eq. 4.2):

    x̂a_{l+1} = f(xa_l) + F(xa_l + f(xm_l), Wa_l)          (additive,  ST-ResNet)
    x̂a_{l+1} = f(xa_l) + F(xa_l ⊙ f(xm_l), Wa_l)          (multiplicative, MulNet Eq. 5.3)

where xa_l, xm_l are the (pre-ReLU) outputs of the streams' first units (*(code)*: ``res{k}a``; the
skip path stays f(xa_l), "connecting through the identity path increased error"), and the result goes
through the final ReLU of the unit. In the same unit both 1x1 convs become **1x1x3 temporal convs**
initialised as ``w/3`` (Eq. 4.5, :func:`~kinetoscope.layers.twostream.inflate_temporal`, zero padding 1
so T is kept), in both streams. BatchNorm moments come from **sub-batches** of 4 clips (§4.3.4,
:class:`~kinetoscope.layers.twostream.SubBatchNorm3d`).

Head: spatial average pool, then over time either nothing (ST-ResNet: one loss per chunk), a max pool
of window 5 and stride 2 (ST-ResNet*, Table 4.1 pool5: 11 chunks -> 4) or a global max; each stream
has its own 2048 -> K classifier (a joint softmax overfits to appearance). ``forward`` averages the two
streams' pre-softmax scores (§4.3.5 inference), per position: ``[B, T', K]`` with ``per_frame = True``
unless ``temporal_pool="global"`` (``[B, K]``). :meth:`CrossStreamResNet.forward_towers` gives each
stream's logits for the two-loss training of the thesis.

Parameters (num_classes = 101, L = 10): 2 x 23,714,981 (ResNet-50) + 53,312 for the 20-channel conv1 +
2 x 5,570,560 for the temporal 1x1x3 filters = 58,624,394 (the thesis gives no count).

Deviations: Table 4.1's pool5 receptive field 47τ is not reproduced (see docs/deviations.md,
'ST-ResNet pool5 receptive field'); the pool
window is clamped to the clip length for clips shorter than 5 chunks.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.layers.twostream import IdentityTemporalConv, inflate_temporal, use_sub_batch_norm
from kinetoscope.models.twostream import (
    FrameResNet,
    pre_activation,
    prepare_flow,
    residual_branch,
    stage_blocks,
)
from kinetoscope.registry import register_model

TemporalPool = Literal["none", "window", "global"]


class CrossStreamResNet(nn.Module):
    """Appearance + motion frame ResNets with motion -> appearance residual gates (module docstring).

    ``forward(rgb [B, 3, T, H, W], flow [B, 2|2L, T, H, W]) -> [B, T', K]`` (or ``[B, K]`` for a global
    temporal pool). ``gate`` is ``"add"`` (Eq. 4.2) or ``"multiply"`` (Eq. 5.3); ``temporal_filters``
    chooses the temporal convs: ``"inflate"`` (Ch. 4: both 1x1 convs of each stage's second unit become
    1x1x3 with weights w/3) or an :class:`IdentityTemporalConv` placement of Ch. 5 — ``"after_3x3"`` (‡,
    after the second unit's 3x3 conv and ReLU), ``"shortcut"`` (†, on the projection shortcut of every
    stage's first unit), ``"conv5"`` (§, only the second unit of conv5) — or ``"none"``.
    """

    streams = ("rgb", "flow")

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 50,
        motion_depth: int | None = None,
        flow_frames: int = 10,
        gate: Literal["add", "multiply"] = "add",
        temporal_filters: str = "inflate",
        identity_init: Literal["identity", "average"] = "identity",
        temporal_pool: TemporalPool = "window",
        bn_sub_batch: int | None = 4,
        dropout: float = 0.0,
    ):
        super().__init__()
        if gate not in ("add", "multiply"):
            raise ValueError(f"gate {gate!r} must be 'add' or 'multiply'")
        if temporal_filters not in ("inflate", "after_3x3", "shortcut", "conv5", "none"):
            raise ValueError(
                f"temporal_filters {temporal_filters!r} must be one of "
                "inflate, after_3x3, shortcut, conv5, none"
            )
        if temporal_pool not in ("none", "window", "global"):
            raise ValueError(f"temporal_pool {temporal_pool!r} must be one of none, window, global")
        for d in (depth, motion_depth or depth):
            if d not in (50, 101, 152):
                raise ValueError(f"cross-stream ResNets use bottleneck ResNets (50, 101, 152); got depth {d}")
        self.gate = gate
        self.temporal_pool = temporal_pool
        self.per_frame = temporal_pool != "global"
        self.flow_frames = flow_frames
        self.flow_channels = 2 * flow_frames
        self.appearance = FrameResNet(depth, num_classes, in_channels, dropout)
        self.motion = FrameResNet(motion_depth or depth, num_classes, self.flow_channels, dropout)
        self.default_input = (in_channels, 5, 224, 224)  # 5 chunks (Table 4.2)
        # the last appearance unit (the stages are walked block by block, so ``layer4`` itself is not called)
        self.explain_layer = f"appearance.layer4.{len(self.appearance.layer4) - 1}"
        for tower in (self.appearance, self.motion):
            add_temporal_filters(tower, temporal_filters, identity_init)
        if bn_sub_batch:
            use_sub_batch_norm(self, bn_sub_batch)

    def _gate(self, appearance_pre: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return appearance_pre + motion if self.gate == "add" else appearance_pre * motion

    def features(self, rgb: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """conv5 features of both streams, ``[B, 2048, T, h, w]`` each."""
        xa = self.appearance.stem(rgb)
        xm = self.motion.stem(prepare_flow(flow, self.flow_frames))
        for stage_a, stage_m in zip(stage_blocks(self.appearance), stage_blocks(self.motion), strict=True):
            pa = pre_activation(stage_a[0], xa)  # appearance res{k}a before its ReLU
            xa = F.relu(pa)
            xm = stage_m[0](xm)  # motion res{k}a after its ReLU: f(xm_l)
            gated = self._gate(pa, xm)
            xa = F.relu(xa + residual_branch(stage_a[1], gated))
            xm = stage_m[1](xm)
            for block in stage_a[2:]:
                xa = block(xa)
            for block in stage_m[2:]:
                xm = block(xm)
        return xa, xm

    def _head(self, tower: FrameResNet, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(3, 4))  # spatial average pool: [B, C, T]
        if self.temporal_pool == "window":
            x = F.max_pool1d(x, kernel_size=min(5, x.shape[2]), stride=2)
        elif self.temporal_pool == "global":
            x = x.amax(dim=2)
            return tower.fc(tower.dropout(x))
        return tower.fc(tower.dropout(x.transpose(1, 2)))  # [B, T', K]

    def forward_towers(self, rgb: torch.Tensor, flow: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each stream's logits (``appearance``, ``motion``), for one loss per stream (§4.3.4)."""
        xa, xm = self.features(rgb, flow)
        return {"appearance": self._head(self.appearance, xa), "motion": self._head(self.motion, xm)}

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        towers = self.forward_towers(rgb, flow)
        return (towers["appearance"] + towers["motion"]) / 2


class TemporallyFilteredConv(nn.Conv3d):
    """``conv(temporal(x))``: a conv preceded by a temporal filter, keeping the conv's parameter names
    (``conv3.weight``) so frame-wise ResNet weights load unchanged; the filter is ``conv3.temporal``."""

    def __init__(self, conv: nn.Conv3d, temporal: nn.Module):
        super().__init__(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype,
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.temporal = temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.temporal(x))


def add_temporal_filters(tower: FrameResNet, placement: str, identity_init: str = "identity") -> None:
    """Insert the temporal filters of Ch. 4 (``"inflate"``) or Ch. 5 (†/‡/§ placements) into ``tower``."""
    stages = stage_blocks(tower)
    if placement == "inflate":
        for stage in stages:
            unit = stage[1]
            unit.conv1 = inflate_temporal(unit.conv1)
            unit.conv3 = inflate_temporal(unit.conv3)
    elif placement in ("after_3x3", "conv5"):
        for stage in stages if placement == "after_3x3" else stages[-1:]:
            unit = stage[1]
            temporal = IdentityTemporalConv(unit.conv3.in_channels, init=identity_init)  # type: ignore[arg-type]
            unit.conv3 = TemporallyFilteredConv(unit.conv3, temporal)
    elif placement == "shortcut":
        for stage in stages:
            unit = stage[0]
            channels = unit.downsample[0].out_channels
            unit.downsample.add_module("temporal", IdentityTemporalConv(channels, init=identity_init))  # type: ignore[arg-type]


@register_model("st_resnet")
def st_resnet(
    num_classes: int = 101,
    in_channels: int = 3,
    flow_frames: int = 10,
    temporal_pool: str = "window",
    bn_sub_batch: int | None = 4,
    dropout: float = 0.0,
) -> CrossStreamResNet:
    """ST-ResNet* (Feichtenhofer 2017 Ch. 4): two ResNet-50 streams, additive motion -> appearance residuals before
    each stage's second unit, 1x1x3 temporal filters (w/3) there, sub-batch BN (4), temporal max pool of
    window 5 / stride 2 (``temporal_pool="none"`` is the per-chunk ST-ResNet stage, ``"global"`` a global
    max)."""
    return CrossStreamResNet(
        num_classes, in_channels, 50, None, flow_frames, "add", "inflate", "identity",
        temporal_pool, bn_sub_batch, dropout,  # type: ignore[arg-type]
    )
