"""Apply a 2D module to every frame of a clip (the "time-distributed" wrapper of the Keras models
of Broomé 2022; used for the per-step 2D max-pool after each ConvLSTM)."""

from __future__ import annotations

import torch
from torch import nn


class Framewise(nn.Module):
    """``[B, C, T, H, W]`` -> ``module`` on each of the B*T frames -> ``[B, C', T, H', W']``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.module(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class FramewiseSequential(nn.Sequential):
    """An ``nn.Sequential`` of 2D layers applied to every frame: ``[B, C, T, H, W] -> [B, C', T, H', W']``.

    Unlike :class:`Framewise` it adds no level to the state-dict keys, so a frame CNN keeps the key
    layout of its image-library original (``features.0.weight`` as in torchvision's VGG) and checkpoints
    load by name. Grad-CAM hooks on it see the 5D clip layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if x.ndim != 5:
            raise ValueError(f"{type(self).__name__}: expected a clip [B, C, T, H, W], got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)
