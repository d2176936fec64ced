"""(2+1)D convolution: a ``kt x k x k`` 3D convolution factorised into a spatial ``1 x k x k`` convolution
followed by a temporal ``kt x 1 x 1`` one (Tran et al. 2018 §3.5).

Two uses in kinetoscope:

* R(2+1)D (:mod:`kinetoscope.models.resnet3d`): spatial conv to ``mid_planes`` (Tran et al.'s mid-channel
  rule), **BN and ReLU** between the two convs (``mid_norm=True``, the default);
* MTConv's branches in "(2+1)D MTNet" (Stergiou 2021 Table 6.1b): ``mid_planes = out_planes`` and nothing
  between the two convs (``mid_norm=False``), the factorisation whose count is the thesis' 25.8M for
  MTNet_M (see :mod:`kinetoscope.models.mtnet`).
"""

from __future__ import annotations

import torch
from torch import nn


class Conv2Plus1D(nn.Module):
    """(2+1)D convolution: spatial 1xkxk to ``mid_planes``, [BN, ReLU], temporal ktx1x1.

    ``[B, C_in, T, H, W] -> [B, C_out, T/temporal_stride, H/stride, W/stride]``. The BN and ReLU between the
    two convs (``mid_norm=True``) are the extra non-linearity Tran et al. credit for part of R(2+1)D's gain
    over R3D; ``mid_norm=False`` leaves the plain factorised kernel. ``groups`` applies to both convs (it
    must divide ``in_planes``, ``mid_planes`` and ``out_planes``).
    """

    def __init__(
        self,
        in_planes: int,
        out_planes: int,
        mid_planes: int,
        stride: int = 1,
        *,
        spatial_kernel: int = 3,
        temporal_kernel: int = 3,
        temporal_stride: int | None = None,
        mid_norm: bool = True,
        groups: int = 1,
    ):
        super().__init__()
        temporal_stride = stride if temporal_stride is None else temporal_stride
        self.spatial = nn.Conv3d(
            in_planes,
            mid_planes,
            kernel_size=(1, spatial_kernel, spatial_kernel),
            stride=(1, stride, stride),
            padding=(0, spatial_kernel // 2, spatial_kernel // 2),
            groups=groups,
            bias=False,
        )
        self.bn: nn.Module | None = nn.BatchNorm3d(mid_planes) if mid_norm else None
        self.relu: nn.Module | None = nn.ReLU(inplace=True) if mid_norm else None
        self.temporal = nn.Conv3d(
            mid_planes,
            out_planes,
            kernel_size=(temporal_kernel, 1, 1),
            stride=(temporal_stride, 1, 1),
            padding=(temporal_kernel // 2, 0, 0),
            groups=groups,
            bias=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.spatial(x)
        if self.bn is not None:
            x = self.relu(self.bn(x))
        return self.temporal(x)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return (stride, stride, stride)
