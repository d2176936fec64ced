"""Apply a 2D module to every frame of a clip (the "time-distributed" wrapper of the Keras models
of seed 000; used for the per-step 2D max-pool after each ConvLSTM)."""

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
