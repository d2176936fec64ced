"""Multi-Temporal Convolution (MTConv) — Stergiou 2021 §5.3.1, Eqs. 5.1-5.4, Fig. 5.2, Table 6.1b.

Channels split by the ratio δ (Eq. 5.1), inputs and outputs alike: ``C_L = floor(δ C)``,
``C_P = C - C_L = ceil((1 - δ) C)`` (54 -> 47 + 7 at δ = 7/8, Table 6.1b's example). Splitting the inputs
too is what Table 5.6's parameter counts imply (minimal at δ = 1/2); the prose's "P operates over
C_L + C_in" is read as the two inputs of P (docs/deviations.md, "MTConv channel split").

* **Local branch** ``a_L = ReLU(BN(Conv_k(x_L)))`` at stride s.
* **Prolonged branch** (Eqs. 5.3-5.4): both its inputs are reduced by two in every dimension — spatially
  by SoftPool ``(1, 2, 2)`` (Eq. 5.5), temporally by triplet-cosine frame selection (Eqs. 5.6-5.7) —
  then ``z_P = BN(Conv_k(Tsel(SoftPool(x_P))))`` (stride s) and
  ``z_LP = BN(Conv1x1x1_{C_L -> C_P}(Tsel(SoftPool(a_L))))``, and
  ``a_P = trilinear(ReLU(z_LP) + ReLU(z_P), size = a_L's T, H, W)``.
* Output ``concat[a_L, a_P]`` (Eq. 5.2), ``[B, C_out, T/s_t, H/s, W/s]``.

**The branch convolution** ``Conv_k`` is, by default (``factorised=True``), the (2+1)D factorisation of the
``3x3x3`` kernel that Table 6.1b's column head "(2+1)D MTNet_M" names: a spatial ``1x3x3`` conv to the
branch's output width, then a temporal ``3x1x1`` conv at that width, nothing in between
(:class:`~kinetoscope.layers.conv2plus1d.Conv2Plus1D` with ``mid_norm=False``). It is the layout whose
parameter count is the thesis' (MTNet_M 25,861,356 at 400 classes, Table 5.1's 25.8M; see
:mod:`kinetoscope.models.mtnet`). ``factorised=False`` is the dense ``3x3x3`` conv the rest of the table
shows.

δ = 1 is a plain conv + BN + ReLU; δ must be in (0, 1]. Separate BNs for ``z_P`` and ``z_LP``. Eq. 5.4
applies ``Tsel`` to each input separately, so the two summands may keep different frames (default);
``share_selection=True`` selects once, on the pooled ``x_P``, for both. Sizes: SoftPool's kernel shrinks to
1 along a dimension of size 1, and if the two summands differ by a rounding step (odd sizes) ``z_P`` is
interpolated to ``z_LP``'s size before the sum; the final trilinear interpolation to ``a_L``'s exact size
absorbs the rest.

``groups``: 1 (dense, default) or, when ``groups == c_in == c_out``, depth-wise per branch (each branch's
conv gets ``groups`` = its own channel count, X3D's channel-wise conv); any other value must divide
both branches' channel counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.layers.conv2plus1d import Conv2Plus1D
from kinetoscope.layers.frame_select import gather_frames, select_frames, triplet_cosine_indices
from kinetoscope.layers.softpool import soft_pool3d


def split_channels(channels: int, delta: float) -> tuple[int, int]:
    """Eq. 5.1: ``(floor(δ C), C - floor(δ C))``."""
    local = math.floor(delta * channels)
    return local, channels - local


def prolonged_pool(x: torch.Tensor) -> torch.Tensor:
    """SoftPool ``(1, 2, 2)`` (kernel 1 along a spatial dim of size 1), back to ``x``'s dtype."""
    kernel = (1, min(2, x.shape[3]), min(2, x.shape[4]))
    if kernel == (1, 1, 1):
        return x
    return soft_pool3d(x, kernel).to(x.dtype)


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    t = tuple(int(v) for v in value)
    if len(t) != 3:
        raise ValueError(f"MTConv: expected an int or 3 ints, got {value!r}")
    return t  # type: ignore[return-value]


class MTConv(nn.Module):
    """MTConv: ``[B, c_in, T, H, W] -> [B, c_out, T', H', W']`` (see the module docstring)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | Sequence[int] = 3,
        stride: int | Sequence[int] = 1,
        *,
        delta: float = 0.875,
        groups: int = 1,
        share_selection: bool = False,
        factorised: bool = True,
    ):
        super().__init__()
        if not 0 < delta <= 1:
            raise ValueError(f"MTConv: delta={delta} must be in (0, 1] (1 = plain conv, no prolonged branch)")
        self.local_in, self.prolonged_in = split_channels(c_in, delta)
        self.local_out, self.prolonged_out = split_channels(c_out, delta)
        if self.local_in == 0 or self.local_out == 0:
            raise ValueError(f"MTConv: delta={delta} leaves no local channels of c_in={c_in}, c_out={c_out}")
        if (self.prolonged_in == 0) != (self.prolonged_out == 0):
            raise ValueError(
                f"MTConv: delta={delta} gives prolonged channels in={self.prolonged_in}, "
                f"out={self.prolonged_out}; both must be zero or both positive"
            )
        kernel3 = _triple(kernel)
        self.stride = _triple(stride)
        padding = tuple(k // 2 for k in kernel3)
        depthwise = groups > 1 and groups == c_in == c_out
        local_groups = self.local_in if depthwise else groups
        prolonged_groups = self.prolonged_in if depthwise else groups
        for name, g, cin, cout in (
            ("local", local_groups, self.local_in, self.local_out),
            ("prolonged", prolonged_groups, self.prolonged_in, self.prolonged_out),
        ):
            if cin and (cin % g or cout % g):
                raise ValueError(
                    f"MTConv: groups={groups} does not divide the {name} branch's channels ({cin} -> {cout}); "
                    f"use 1, or groups == c_in == c_out for depth-wise"
                )
        if share_selection and self.stride[0] != 1:
            raise ValueError(
                f"MTConv: share_selection=True needs temporal stride 1 (both inputs keep T); got stride={stride}"
            )
        if factorised and (kernel3[1] != kernel3[2] or self.stride[1] != self.stride[2]):
            raise ValueError(
                f"MTConv: factorised=True needs a square spatial kernel and stride; got kernel={kernel}, "
                f"stride={stride} (use factorised=False)"
            )
        self.share_selection = share_selection
        self.factorised = factorised

        def branch_conv(c_from: int, c_to: int, g: int) -> nn.Module:
            if factorised:  # 1xkxk -> c_to, then ktx1x1 at c_to (Table 6.1b's "(2+1)D")
                return Conv2Plus1D(
                    c_from,
                    c_to,
                    c_to,
                    self.stride[1],
                    spatial_kernel=kernel3[1],
                    temporal_kernel=kernel3[0],
                    temporal_stride=self.stride[0],
                    mid_norm=False,
                    groups=g,
                )
            return nn.Conv3d(c_from, c_to, kernel3, self.stride, padding, groups=g, bias=False)

        self.local_conv = branch_conv(self.local_in, self.local_out, local_groups)
        self.local_bn = nn.BatchNorm3d(self.local_out)
        self.relu = nn.ReLU(inplace=True)
        self.has_prolonged = self.prolonged_out > 0
        if self.has_prolonged:
            self.prolonged_conv = branch_conv(self.prolonged_in, self.prolonged_out, prolonged_groups)
            self.prolonged_bn = nn.BatchNorm3d(self.prolonged_out)
            self.local_to_prolonged = nn.Conv3d(self.local_out, self.prolonged_out, 1, bias=False)
            self.local_to_prolonged_bn = nn.BatchNorm3d(self.prolonged_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_local, x_prolonged = x.split([self.local_in, self.prolonged_in], dim=1)
        a_local = self.relu(self.local_bn(self.local_conv(x_local)))
        if not self.has_prolonged:
            return a_local
        pooled_p = prolonged_pool(x_prolonged)
        pooled_l = prolonged_pool(a_local)
        if self.share_selection:
            indices = triplet_cosine_indices(pooled_p) if pooled_p.shape[2] > 1 else None
            selected_p = pooled_p if indices is None else gather_frames(pooled_p, indices)
            selected_l = pooled_l if indices is None else gather_frames(pooled_l, indices)
        else:
            selected_p, _ = select_frames(pooled_p)
            selected_l, _ = select_frames(pooled_l)
        z_p = self.prolonged_bn(self.prolonged_conv(selected_p))
        z_lp = self.local_to_prolonged_bn(self.local_to_prolonged(selected_l))
        if z_p.shape[2:] != z_lp.shape[2:]:
            z_p = F.interpolate(z_p, size=z_lp.shape[2:], mode="trilinear", align_corners=False)
        summed = F.relu(z_lp) + F.relu(z_p)
        a_prolonged = F.interpolate(summed, size=a_local.shape[2:], mode="trilinear", align_corners=False)
        return torch.cat([a_local, a_prolonged], dim=1)
