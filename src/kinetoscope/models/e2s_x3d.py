"""E2S-X3D: an X3D-M RGB stream and an X3D-S optical-flow stream, fused late by concatenation
(Ilic 2024 Ch. 4 §4.5).

* RGB stream: X3D-M (16 x 5 clips at 224²); flow stream: X3D-S (13 x 6 clips at 160² — "flow already
  carries the dynamics"); both built by :mod:`kinetoscope.models.x3d`, so each has 3,794,274 parameters
  at 400 classes, like PyTorchVideo's hub models.
* Late fusion by concatenation, then a fully connected layer, softmax and cross-entropy. Following the
  authors' code (docs/deviations.md, 'E2S fusion input'), each stream's head gives K logits and ``Linear(2K,
  K)`` maps ``[flow, rgb]`` to the output
  (``fusion_input="logits"``, default); ``fusion_input="features"`` concatenates the two 2048-d head
  features instead (``Linear(4096, K)``) and the streams' own classifiers are dropped.

Flow input: raw (u, v), 2 channels, by default (docs/deviations.md, 'Flow-stream encoding of the
appearance-free models'; the reproduction config may pass the
authors' 3-channel Middlebury colour coding with ``flow_channels=3``). The two streams may see different
clips: ``forward(rgb, flow)`` accepts any T, H, W per stream. Given the kinetoscope batch layout (flow
aligned with the RGB frames), ``flow_frames`` / ``flow_size`` resample the flow clip inside the model to
the thesis's 13 frames at 160² (uniform frame indices over the clip; bilinear resize with the vectors'
u and v rescaled by the width and height ratios); both default to ``None`` (use the flow clip as given).

Parameters at K = 101 classes: X3D-M 3,181,623 + X3D-S on 2 flow channels 3,181,407 (216 fewer conv1
weights) + ``Linear(2K, K)`` 20,503 = 6,383,533 (the thesis gives no count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.models.x3d import X3D, x3d
from kinetoscope.registry import register_model


def resample_flow(flow: torch.Tensor, frames: int | None, size: int | None) -> torch.Tensor:
    """``[B, C, T, H, W]`` flow -> ``[B, C, frames, size, size]``: uniform frame indices, bilinear resize;
    the first two channels (u, v) are scaled by the width/height ratios so vectors stay in pixels."""
    if frames is not None and frames != flow.shape[2]:
        index = torch.linspace(0, flow.shape[2] - 1, frames, device=flow.device).round().long()
        flow = flow[:, :, index]
    if size is not None and (flow.shape[3], flow.shape[4]) != (size, size):
        b, c, t, h, w = flow.shape
        frames2d = flow.transpose(1, 2).reshape(b * t, c, h, w)
        frames2d = F.interpolate(frames2d, size=(size, size), mode="bilinear", align_corners=False)
        scale = torch.ones(c, device=flow.device, dtype=flow.dtype)
        scale[0] = size / w
        if c > 1:
            scale[1] = size / h
        frames2d = frames2d * scale.view(1, c, 1, 1)
        flow = frames2d.reshape(b, t, c, size, size).transpose(1, 2)
    return flow


class E2SX3D(nn.Module):
    """``forward(rgb [B, 3, T, H, W], flow [B, 2, T', H', W']) -> logits [B, num_classes]``."""

    streams = ("rgb", "flow")
    per_frame = False
    explain_layer = "rgb.layer4"

    def __init__(
        self,
        num_classes: int = 101,
        in_channels: int = 3,
        flow_channels: int = 2,
        fusion_input: str = "logits",
        flow_frames: int | None = None,
        flow_size: int | None = None,
        dropout: float = 0.5,
    ):
        super().__init__()
        if fusion_input not in ("logits", "features"):
            raise ValueError(f"fusion_input {fusion_input!r} must be 'logits' or 'features'")
        self.rgb: X3D = x3d("m", num_classes, in_channels, dropout)
        self.flow: X3D = x3d("s", num_classes, flow_channels, dropout)
        self.flow_channels = flow_channels
        self.flow_frames = flow_frames
        self.flow_size = flow_size
        self.fusion_input = fusion_input
        self.default_input = self.rgb.default_input
        if fusion_input == "features":
            width = self.rgb.fc.in_features
            self.rgb.fc = nn.Identity()
            self.flow.fc = nn.Identity()
            self.fuse = nn.Linear(2 * width, num_classes)
        else:
            self.fuse = nn.Linear(2 * num_classes, num_classes)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        flow = resample_flow(flow, self.flow_frames, self.flow_size)
        if flow.shape[1] != self.flow_channels:
            raise ValueError(
                f"e2s_x3d flow stream expects {self.flow_channels} channels; got flow {tuple(flow.shape)} "
                f"(set flow_channels)"
            )
        return self.fuse(torch.cat([self.flow(flow), self.rgb(rgb)], dim=1))  # [flow, rgb] as in the code


@register_model("e2s_x3d")
def e2s_x3d(
    num_classes: int = 101,
    in_channels: int = 3,
    flow_channels: int = 2,
    fusion_input: str = "logits",
    flow_frames: int | None = None,
    flow_size: int | None = None,
    dropout: float = 0.5,
) -> E2SX3D:
    """E2S-X3D (Ilic 2024 Ch. 4): X3D-M on RGB + X3D-S on optical flow, late fusion by concatenation and a
    linear layer. For the thesis's flow clip (13 frames at 160²) set ``flow_frames=13, flow_size=160``."""
    return E2SX3D(num_classes, in_channels, flow_channels, fusion_input, flow_frames, flow_size, dropout)
