"""Local correlation of two feature maps (Feichtenhofer 2017 §8.3.4, Eq. 8.4; Dosovitskiy et al. 2015).

``corr(i, j, p, q) = <x^t(i, j), x^{t+tau}(i + p, j + q)>`` for ``-d <= p, q <= d``: every position of
the first map is compared with the ``(2d + 1)²`` positions of the second map in a square window around
it, giving ``(2d + 1)²`` output channels (289 at the document's d = 8). ``stride`` subsamples the
positions ``(i, j)`` of the first map (the document's conv3 correlation uses stride 2 so that its
output matches the size of the conv4/conv5 correlations); offsets stay in steps of one cell of the
input map. Positions ``(i + p, j + q)`` outside the second map contribute 0 (zero padding).

The inner product is divided by the number of channels (as FlowNet's correlation layer does), so
the response does not grow with the width of the trunk; the tracking head learns from the
relative pattern across offsets, which the scale does not change.

Output channel ``(p + d) * (2d + 1) + (q + d)``: rows are vertical offsets p, columns horizontal q.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def correlation(x1: torch.Tensor, x2: torch.Tensor, max_displacement: int = 8, stride: int = 1) -> torch.Tensor:
    """``[B, C, H, W] x [B, C, H, W] -> [B, (2d+1)², ceil(H/stride), ceil(W/stride)]`` (Eq. 8.4 / C).

    Shifted products: for each vertical offset the band of rows ``i + p`` of the zero-padded second
    map is unfolded into its ``2d + 1`` horizontal shifts (a view, no copy) and contracted with the
    first map over channels — ``2d + 1`` batched products instead of ``(2d + 1)²`` loops.
    """
    if x1.shape != x2.shape or x1.dim() != 4:
        raise ValueError(
            f"correlation needs two [B, C, H, W] maps of one shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    d = max_displacement
    height, width = x1.shape[-2:]
    first = x1[:, :, ::stride, ::stride]
    padded = F.pad(x2, (d, d, d, d))
    rows = []
    for p in range(2 * d + 1):
        band = padded[:, :, p : p + height : stride, :]  # rows i + (p - d) of x2, i on the stride grid
        shifts = band.unfold(3, 2 * d + 1, 1)[:, :, :, ::stride]  # [B, C, Ho, Wo, 2d+1]: columns j + (q - d)
        rows.append(torch.einsum("bchw,bchwq->bqhw", first, shifts))
    corr = torch.stack(rows, dim=1)  # [B, 2d+1 (p), 2d+1 (q), Ho, Wo]
    return corr.flatten(1, 2) / x1.shape[1]


class Correlation(nn.Module):
    """:func:`correlation` as a module (no parameters)."""

    def __init__(self, max_displacement: int = 8, stride: int = 1):
        super().__init__()
        self.max_displacement = max_displacement
        self.stride = stride

    @property
    def out_channels(self) -> int:
        return (2 * self.max_displacement + 1) ** 2

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return correlation(x1, x2, self.max_displacement, self.stride)

    def extra_repr(self) -> str:
        return f"max_displacement={self.max_displacement}, stride={self.stride}"
