"""The equine-pain ConvLSTMs of Broomé 2022 §3.2: ConvLSTM-1 and the two-stream ConvLSTM-2.

    ConvLSTM-1  [B, 3, 10, 128, 128]
      4 x [ConvLSTM(32, 5x5, stride 1, full sequence) -> 2x2 max-pool per step -> BN]   [B, 32, 10, 8, 8]
      time-distributed dense 8*8*32 -> 2                                                [B, 10, 2]
    ConvLSTM-2  RGB trunk and flow trunk as above, fused after block 4 by element-wise add
                (soft OR, the best in Broomé 2022 Table 3.4) or mult (AND), dropout 0.2, then the same head.

Parameter counts as the thesis counts them (Keras: trainable parameters plus the BatchNorm moving
mean and variance; the ConvLSTM recurrent kernel has no bias): 731,522 and 1,458,946 at 128², 2
classes. :func:`keras_param_count` computes that figure; ``sum(p.numel())`` is 256 (512) lower.

Deviations:
- Head: Keras uses 2 sigmoid units + BCE; here 2 logits per frame; the loss (CE or BCE on one-hot
  targets; see docs/deviations.md, 'Pain head: two sigmoid units and BCE') is chosen by ``train.loss``. The
  clip verdict is the majority vote of
  the per-frame argmax with a seeded random tie-break (:func:`vote_over_frames`, Broomé 2022 §3.2) or the mean.
- ``head="clip"`` gives the §3.3 variant: the whole 10-step output flattened into one dense layer,
  clip-level loss (``per_frame = False``).
- Flow with 2 channels (u, v) gets its magnitude appended on the fly when the model expects 3
  (Broomé 2022 §3.2: "the magnitude of u and v added as a third channel").
"""

from __future__ import annotations

import torch
from torch import nn

from kinetoscope.layers.convlstm import ConvLSTM
from kinetoscope.layers.framewise import Framewise
from kinetoscope.registry import register_model

HEADS = ("frame", "clip")
FUSIONS = ("add", "mult")


class PainTrunk(nn.Module):
    """``blocks`` x [ConvLSTM(hidden, k x k, no recurrent bias) -> 2x2 max-pool per step -> BN].

    ``[B, C, T, H, W]`` -> ``[B, hidden, T, H / 2**blocks, W / 2**blocks]``.
    """

    def __init__(self, in_channels: int, hidden: int = 32, blocks: int = 4, kernel_size: int = 5) -> None:
        super().__init__()
        layers = []
        channels = in_channels
        for _ in range(blocks):
            layers.append(
                nn.ModuleDict(
                    {
                        "convlstm": ConvLSTM(channels, hidden, kernel_size, hidden_bias=False),
                        "pool": Framewise(nn.MaxPool2d(2)),
                        "bn": nn.BatchNorm3d(hidden),
                    }
                )
            )
            channels = hidden
        self.blocks = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block["bn"](block["pool"](block["convlstm"](x)))  # [B, h, T, H, W]
        return x


class PainHead(nn.Module):
    """``frame``: time-distributed dense (shared weights over steps) -> ``[B, T, K]``;
    ``clip``: all steps flattened into one dense layer -> ``[B, K]``."""

    def __init__(self, features: int, num_classes: int, frames: int, head: str) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.head = head
        self.classifier = nn.Linear(features * (frames if head == "clip" else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T, H, W]`` -> ``[B, T, K]`` (frame) or ``[B, K]`` (clip)."""
        x = x.transpose(1, 2)  # [B, T, C, H, W]; Keras flattens each step as (H, W, C), order is irrelevant
        if self.head == "clip":
            return self.classifier(x.flatten(1))
        return self.classifier(x.flatten(2))


def check_input_size(name: str, x: torch.Tensor, input_size: int) -> None:
    """Refuse a clip whose frames are not ``input_size``² (the dense head fixes the frame size), by name."""
    if x.ndim != 5 or x.shape[-2:] != (input_size, input_size):
        raise ValueError(
            f"{name}: expected input [B, C, T, {input_size}, {input_size}], got {tuple(x.shape)}; "
            "set model.input_size to the frame size of the data"
        )


def _check_size(name: str, input_size: int, blocks: int) -> int:
    side = input_size // 2**blocks
    if side < 1 or input_size % 2**blocks:
        raise ValueError(
            f"{name}: input_size={input_size} must be a multiple of 2**blocks = {2**blocks} "
            f"({blocks} blocks of 2x2 pooling); Broomé 2022 uses 128"
        )
    return side


class ConvLSTM1(nn.Module):
    """One-stream pain ConvLSTM (Broomé 2022 §3.2). ``forward(x [B, C, T, H, W])`` -> ``[B, T, K]``
    (``head="frame"``) or ``[B, K]`` (``head="clip"``). ``stream="flow"`` trains it on optical flow
    instead of RGB (the "ConvLSTM-1 flow" row of Broomé 2022 Table 3.4); 2-channel flow gets its magnitude."""

    streams = ("rgb",)
    per_frame = True
    explain_layer = "trunk.blocks.3.convlstm"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        hidden: int = 32,
        blocks: int = 4,
        kernel_size: int = 5,
        input_size: int = 128,
        frames: int = 10,
        head: str = "frame",
        dropout: float = 0.0,
        stream: str = "rgb",
    ) -> None:
        super().__init__()
        if stream not in ("rgb", "flow"):
            raise ValueError(f"convlstm1: stream must be 'rgb' or 'flow', got {stream!r}")
        side = _check_size("convlstm1", input_size, blocks)
        self.streams = (stream,)
        self.in_channels = 3 if stream == "flow" else in_channels  # flow: (u, v, magnitude)
        self.trunk = PainTrunk(self.in_channels, hidden, blocks, kernel_size)
        self.dropout = nn.Dropout(dropout)
        self.head = PainHead(hidden * side * side, num_classes, frames, head)
        self.per_frame = head == "frame"
        self.input_size = input_size
        self.explain_layer = f"trunk.blocks.{blocks - 1}.convlstm"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("convlstm1", x, self.input_size)
        if self.streams == ("flow",) and x.shape[1] == 2:
            x = with_magnitude(x)
        return self.head(self.dropout(self.trunk(x)))


def with_magnitude(flow: torch.Tensor) -> torch.Tensor:
    """``[B, 2, T, H, W]`` (u, v) -> ``[B, 3, T, H, W]`` (u, v, sqrt(u² + v²)) (Broomé 2022 §3.2)."""
    return torch.cat([flow, flow.pow(2).sum(1, keepdim=True).sqrt()], dim=1)


class ConvLSTM2(nn.Module):
    """Two-stream pain ConvLSTM (Broomé 2022 §3.2, Fig. 3.4): RGB and flow trunks fused after the last block
    by element-wise ``add`` or ``mult``, dropout 0.2, time-distributed dense.

    ``forward(rgb [B, C, T, H, W], flow [B, 2|3, T, H, W])`` -> ``[B, T, K]`` (or ``[B, K]``)."""

    streams = ("rgb", "flow")
    per_frame = True
    explain_layer = "rgb.blocks.3.convlstm"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        hidden: int = 32,
        blocks: int = 4,
        kernel_size: int = 5,
        input_size: int = 128,
        frames: int = 10,
        head: str = "frame",
        fusion: str = "add",
        dropout: float = 0.2,
        flow_channels: int = 3,
    ) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"convlstm2: fusion must be one of {FUSIONS}, got {fusion!r}")
        if flow_channels not in (2, 3):
            raise ValueError(
                f"convlstm2: flow_channels must be 2 (u, v) or 3 (u, v, magnitude), got {flow_channels}"
            )
        side = _check_size("convlstm2", input_size, blocks)
        self.fusion = fusion
        self.flow_channels = flow_channels
        self.rgb = PainTrunk(in_channels, hidden, blocks, kernel_size)
        self.flow = PainTrunk(flow_channels, hidden, blocks, kernel_size)
        self.dropout = nn.Dropout(dropout)
        self.head = PainHead(hidden * side * side, num_classes, frames, head)
        self.per_frame = head == "frame"
        self.input_size = input_size
        self.explain_layer = f"rgb.blocks.{blocks - 1}.convlstm"

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        check_input_size("convlstm2", rgb, self.input_size)
        check_input_size("convlstm2 (flow)", flow, self.input_size)
        if flow.shape[1] == 2 and self.flow_channels == 3:
            flow = with_magnitude(flow)
        if flow.shape[1] != self.flow_channels:
            raise ValueError(
                f"convlstm2: flow has {flow.shape[1]} channels, the model takes {self.flow_channels} "
                "(set model.flow_channels)"
            )
        a, b = self.rgb(rgb), self.flow(flow)
        fused = a + b if self.fusion == "add" else a * b
        return self.head(self.dropout(fused))


def keras_param_count(model: nn.Module) -> int:
    """Parameters as Keras counts them: all parameters plus every BatchNorm's moving mean and
    variance (Keras "non-trainable params"; Broomé 2022 Table 3.4 counts them). ``num_batches_tracked`` is
    PyTorch bookkeeping and not counted."""
    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            total += module.running_mean.numel() + module.running_var.numel()
    return total


def vote_over_frames(frame_logits: torch.Tensor, seed: int | torch.Generator = 0) -> torch.Tensor:
    """Majority vote of per-frame predictions with a random tie-break (Broomé 2022 §3.2).

    ``frame_logits [B, T, K]`` -> vote scores ``[B, K]``: each class's share of the T frame votes, with
    half a vote added to the winner (drawn uniformly among tied classes by ``seed``), renormalised, so
    ``argmax`` is the verdict and the scores still sum to 1.
    """
    if frame_logits.ndim != 3:
        raise ValueError(f"vote_over_frames: expected [B, T, K] logits, got {tuple(frame_logits.shape)}")
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    b, _, k = frame_logits.shape
    votes = torch.nn.functional.one_hot(frame_logits.argmax(-1), k).sum(1).double()  # [B, K]
    tied = votes == votes.max(1, keepdim=True).values
    noise = torch.rand(b, k, generator=generator, dtype=torch.float64)
    winner = torch.where(tied, noise, torch.full_like(noise, -1.0)).argmax(1)
    votes[torch.arange(b), winner] += 0.5
    return (votes / votes.sum(1, keepdim=True)).float()


def clip_scores(
    logits: torch.Tensor, frame_aggregation: str = "vote", seed: int | torch.Generator = 0
) -> torch.Tensor:
    """Clip probabilities ``[B, K]`` from ``[B, K]`` or per-frame ``[B, T, K]`` logits.

    ``frame_aggregation``: ``vote`` (majority of frame argmaxes, seeded random tie-break; Broomé 2022 §3.2) or
    ``mean`` (mean of per-frame softmax)."""
    if logits.ndim == 2:
        return torch.softmax(logits.float(), -1)
    if frame_aggregation == "vote":
        return vote_over_frames(logits, seed)
    if frame_aggregation == "mean":
        return torch.softmax(logits.float(), -1).mean(1)
    raise ValueError(f"frame_aggregation must be 'vote' or 'mean', got {frame_aggregation!r}")


@register_model("convlstm1")
def convlstm1(
    num_classes: int = 2,
    in_channels: int = 3,
    hidden: int = 32,
    blocks: int = 4,
    kernel_size: int = 5,
    input_size: int = 128,
    frames: int = 10,
    head: str = "frame",
    dropout: float = 0.0,
    stream: str = "rgb",
) -> ConvLSTM1:
    """ConvLSTM-1 (Broomé 2022 §3.2): 731,522 Keras-counted parameters at 128², 2 classes; ``stream`` rgb | flow."""
    return ConvLSTM1(
        num_classes, in_channels, hidden, blocks, kernel_size, input_size, frames, head, dropout, stream
    )


@register_model("convlstm2")
def convlstm2(
    num_classes: int = 2,
    in_channels: int = 3,
    hidden: int = 32,
    blocks: int = 4,
    kernel_size: int = 5,
    input_size: int = 128,
    frames: int = 10,
    head: str = "frame",
    fusion: str = "add",
    dropout: float = 0.2,
    flow_channels: int = 3,
) -> ConvLSTM2:
    """ConvLSTM-2 (Broomé 2022 §3.2): RGB + flow, add/mult fusion; 1,458,946 Keras-counted parameters."""
    return ConvLSTM2(
        num_classes,
        in_channels,
        hidden,
        blocks,
        kernel_size,
        input_size,
        frames,
        head,
        fusion,
        dropout,
        flow_channels,
    )
