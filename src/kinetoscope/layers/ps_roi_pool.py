"""Position-sensitive RoI pooling (R-FCN, Li et al. 2016; used by Feichtenhofer 2017 §8.3.2).

A bank of ``G * k²`` score maps holds, for each of G outputs (C + 1 classes, or 4 box coordinates),
one map per cell of a ``k x k`` grid over the RoI. Bin ``(i, j)`` of an RoI is pooled *only* from
the map of its own cell, channel ``g * k² + i * k + j`` (R-FCN's class-major layout), so the pooled
``[G, k, k]`` scores encode where in the object each part was seen; :func:`ps_vote` averages the
k x k bins into G scores (R-FCN's voting).

Pooling averages ``sampling_ratio²`` bilinear samples per bin (the RoIAlign form of R-FCN's
average pooling: no quantisation of RoI or bin edges), in feature coordinates
``pixel * spatial_scale - 0.5`` (pixel centres), with samples clamped into the map. Implemented with
gathers, so memory is ``R x G x k² x sampling_ratio²``, independent of the map size.
"""

from __future__ import annotations

import torch
from torch import nn


def ps_roi_pool(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int = 2,
) -> torch.Tensor:
    """``features [B, G*k*k, H, W]``, ``rois [R, 5]`` (batch index, x1, y1, x2, y2 in input pixels)
    -> ``[R, G, k, k]``."""
    k, s = output_size, sampling_ratio
    batch, channels, height, width = features.shape
    if channels % (k * k):
        raise ValueError(
            f"position-sensitive pooling with k={k} needs a multiple of k²={k * k} channels, got {channels}"
        )
    groups = channels // (k * k)
    num = rois.shape[0]
    if num == 0:
        return features.new_zeros(0, groups, k, k)
    box = rois[:, 1:] * spatial_scale
    size = (box[:, 2:] - box[:, :2]).clamp(min=1e-3)  # [R, 2] (w, h)
    offsets = (torch.arange(k, dtype=features.dtype, device=features.device)[:, None]
               + (torch.arange(s, dtype=features.dtype, device=features.device)[None, :] + 0.5) / s).reshape(-1) / k
    xs = (box[:, 0:1] + offsets[None, :] * size[:, 0:1] - 0.5).clamp(0, width - 1)   # [R, k*s]
    ys = (box[:, 1:2] + offsets[None, :] * size[:, 1:2] - 0.5).clamp(0, height - 1)  # [R, k*s]
    x0, y0 = xs.floor().long(), ys.floor().long()
    x1, y1 = (x0 + 1).clamp(max=width - 1), (y0 + 1).clamp(max=height - 1)
    wx, wy = xs - x0, ys - y0

    grid = torch.arange(k, device=features.device)
    cells = (grid[:, None] * k + grid[None, :]).repeat_interleave(s, 0).repeat_interleave(s, 1)  # [k*s, k*s]
    channel = torch.arange(groups, device=features.device)[:, None, None] * k * k + cells  # [G, k*s, k*s]
    flat = features.reshape(batch, channels, height * width)
    b = rois[:, 0].long()[:, None, None, None]

    def gather(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:  # -> [R, G, k*s, k*s]
        position = yi[:, None, :, None] * width + xi[:, None, None, :]
        return flat[b, channel[None], position]

    wy_, wx_ = wy[:, None, :, None], wx[:, None, None, :]
    values = ((1 - wy_) * (1 - wx_) * gather(y0, x0) + (1 - wy_) * wx_ * gather(y0, x1)
              + wy_ * (1 - wx_) * gather(y1, x0) + wy_ * wx_ * gather(y1, x1))
    return values.reshape(num, groups, k, s, k, s).mean(dim=(3, 5))


def ps_vote(pooled: torch.Tensor) -> torch.Tensor:
    """R-FCN voting: average the ``k x k`` position-sensitive bins, ``[R, G, k, k] -> [R, G]``."""
    return pooled.mean(dim=(2, 3))


class PSRoIPool(nn.Module):
    """:func:`ps_roi_pool` followed by :func:`ps_vote` -> ``[R, G]``."""

    def __init__(self, output_size: int, spatial_scale: float, sampling_ratio: int = 2):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return ps_vote(ps_roi_pool(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio))

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}")
