"""SoftPool: softmax-weighted pooling over each window (Stergiou 2021 §5.3.1, Eq. 5.5).

For every window R of the last 1, 2 or 3 dimensions (per sample and channel)::

    w_i = e^{a_i} / sum_{j in R} e^{a_j}          out = sum_{i in R} w_i a_i

so the output lies between the window mean (all a_i equal) and the window max (one a_i dominating).
Pooling geometry is ordinary pooling: no padding, ``floor((D - k) / s) + 1`` outputs per dimension,
stride defaults to the kernel (Stergiou 2021 §5.3.1). The CUDA kernel of the author's public code
yields ``D // s`` outputs with windows offset by ``-k/2``; that geometry is not copied.

Computation (vectorised, no loop over windows):

* ``kernel == stride`` (non-overlapping windows, the case MTConv uses): ``e = exp(a - m)`` and
  ``out = avg_pool(a * e) / avg_pool(e)`` — the identity ``sum e^a a / sum e^a`` with the window size
  cancelling, exact for any shift ``m``. The fast path takes ``m = 0``; whenever a window overflows or
  underflows (denominator < 1e-30, checked on the small pooled tensors) the call is redone with ``m`` =
  the per-window max (``max_pool``), where each window's denominator is in ``[1/|R|, 1]`` — no overflow,
  no 0/0, at any input scale. A custom ``autograd.Function`` computes the backward in three element-wise
  passes (``benchmarks/softpool.py``: forward+backward about 2.5-3x average pooling on CPU).
* overlapping windows: ``Tensor.unfold`` views each window and ``softmax`` (itself max-shifted) gives
  the weights.

Precision: the thesis trained in fp16 with SoftPool computed in fp32 "to avoid gradient underflows"
(§5.4.1 footnote). Here autocast is switched off inside SoftPool, the input is cast to fp32 and the
output stays fp32 (float64 input stays float64, for ``gradcheck``).

Gradient: the default is autograd's exact gradient of Eq. 5.5, ``d out / d a_i = w_i (1 + a_i - out)``.
The author's CUDA backward passes ``g * w_i`` (from the author's public code; the thesis' Fig. 5.3
"the weights are also used during the backward"); ``grad="weights"`` gives that instead (the weights
are detached, so autograd returns exactly ``g * w_i``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from kinetoscope.layers.tracing import recording_graph

_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
GRAD_MODES = ("autograd", "weights")
_TINY = 1e-30  # below this a window's denominator has lost precision (fp32 subnormals start ~1e-38)


def _tuple(value: int | Sequence[int], dims: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    if len(value) != dims:
        raise ValueError(f"soft_pool{dims}d: {name}={value} must be an int or {dims} ints")
    return value


def soft_pool(
    x: torch.Tensor,
    dims: int,
    kernel_size: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    grad: str = "autograd",
) -> torch.Tensor:
    """SoftPool over the last ``dims`` dimensions of ``x`` (Eq. 5.5).

    ``x``: ``[B, C, *spatial]`` (or ``[C, *spatial]``) with ``len(spatial) == dims``. Returns fp32 (fp64
    for fp64 input) ``[B, C, *out]`` with ``out_d = floor((D_d - k_d) / s_d) + 1``.
    """
    if dims not in _AVG_POOL:
        raise ValueError(f"soft_pool: dims={dims}; expected 1, 2 or 3")
    if grad not in GRAD_MODES:
        raise ValueError(f"soft_pool: grad={grad!r}; expected one of {', '.join(GRAD_MODES)}")
    if x.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"soft_pool{dims}d: input of shape {tuple(x.shape)} must have {dims + 1} or {dims + 2} dimensions"
        )
    kernel = _tuple(kernel_size, dims, "kernel_size")
    strides = kernel if stride is None else _tuple(stride, dims, "stride")
    sizes = x.shape[-dims:]
    if any(k < 1 for k in kernel) or any(s < 1 for s in strides):
        raise ValueError(f"soft_pool{dims}d: kernel_size={kernel} and stride={strides} must be >= 1")
    if any(k > d for k, d in zip(kernel, sizes, strict=True)):
        raise ValueError(
            f"soft_pool{dims}d: kernel_size={kernel} is larger than the input's last dims {tuple(sizes)}"
        )
    device_type = "cpu" if x.device.type == "meta" else x.device.type  # autocast knows no "meta"
    with torch.autocast(device_type=device_type, enabled=False):
        if x.dtype != torch.float64:
            x = x.float()
        if kernel == strides and not recording_graph():  # a graph cannot hold the Function: unfold form
            return _soft_pool_tiled(x, dims, kernel, grad)
        return _soft_pool_unfold(x, dims, kernel, strides, grad)


def _window_view(t: torch.Tensor, kernel: tuple[int, ...]) -> torch.Tensor:
    """``[N, o_1 k_1, ..., o_n k_n] -> [N, o_1, k_1, ..., o_n, k_n]`` (a view; ``t`` contiguous)."""
    shape = [t.shape[0]]
    for size, k in zip(t.shape[1:], kernel, strict=True):
        shape += [size // k, k]
    return t.view(shape)


def _broadcast_view(t: torch.Tensor) -> torch.Tensor:
    """``[N, o_1, ..., o_n] -> [N, o_1, 1, ..., o_n, 1]``: one value per window, broadcast over it."""
    shape = [t.shape[0]]
    for size in t.shape[1:]:
        shape += [size, 1]
    return t.view(shape)


def _safe(num: torch.Tensor, den: torch.Tensor) -> bool:
    """No window over- or underflowed: ``1e-30 <= den < inf`` and ``num`` finite (one reduction each)."""
    if den.is_meta:  # shape-only runs (FLOP counting on the meta device) have no values to check
        return True
    low, high = torch.aminmax(den)
    return bool(low >= _TINY) and bool(torch.isfinite(high)) and bool(torch.isfinite(num.sum()))


class _TiledSoftPool(torch.autograd.Function):
    """SoftPool over non-overlapping windows; ``x`` is ``[N, *spatial]``, contiguous, sizes divisible.

    Forward: ``e = exp(x - m)``, ``out = avg_pool(x e) / avg_pool(e)``, exact for any shift ``m`` (it
    cancels). The fast path uses ``m = 0``; if any window overflows (``inf``) or underflows
    (``avg_pool(e) < 1e-30``, e.g. every element below about -69 in fp32) the call is redone with the
    per-window max (``max_pool``), where every window holds an ``e = 1``: denominator in ``[1/|R|, 1]``,
    ``x e`` bounded by ``|x|`` — no overflow, no 0/0 at any input scale. The checks read only the small
    pooled tensors.
    Backward: ``dx_i = g w_i (1 + x_i - out)`` with ``w_i = e_i / (|R| avg_pool(e))``, or ``g w_i``
    for ``grad="weights"`` — three element-wise passes, no autograd graph of the forward.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple[int, ...], grad: str) -> torch.Tensor:
        dims = len(kernel)
        avg = _AVG_POOL[dims]
        windows = _window_view(x, kernel)

        def moments(e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            den = avg(e.view(x.shape).unsqueeze(0), kernel).squeeze(0)
            num = avg(torch.mul(windows, e).view(x.shape).unsqueeze(0), kernel).squeeze(0)
            return num, den

        e = torch.exp(windows)
        num, den = moments(e)
        if not _safe(num, den):
            window_max = _MAX_POOL[dims](x.unsqueeze(0), kernel).squeeze(0)
            e = torch.sub(windows, _broadcast_view(window_max)).exp_()
            num, den = moments(e)
        out = num.div_(den)
        ctx.save_for_backward(x, e, den, out)
        ctx.kernel = kernel
        ctx.grad_mode = grad
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, e, den, out = ctx.saved_tensors
        kernel = ctx.kernel
        scale = _broadcast_view(grad_out / (den * math.prod(kernel)))
        if ctx.grad_mode == "weights":
            grad_in = torch.mul(e, scale)
        else:
            grad_in = torch.sub(_window_view(x, kernel), _broadcast_view(out - 1))
            grad_in.mul_(e).mul_(scale)
        return grad_in.view(x.shape), None, None


def _soft_pool_tiled(x: torch.Tensor, dims: int, kernel: tuple[int, ...], grad: str) -> torch.Tensor:
    """Non-overlapping windows: crop what no window covers, flatten the leading dims, apply the Function."""
    lead = x.shape[:-dims]
    outs = [d // k for d, k in zip(x.shape[-dims:], kernel, strict=True)]
    index = (...,) + tuple(slice(0, o * k) for o, k in zip(outs, kernel, strict=True))
    flat = x[index].reshape(-1, *(o * k for o, k in zip(outs, kernel, strict=True)))
    return _TiledSoftPool.apply(flat, kernel, grad).view(*lead, *outs)


def _soft_pool_unfold(
    x: torch.Tensor, dims: int, kernel: tuple[int, ...], strides: tuple[int, ...], grad: str
) -> torch.Tensor:
    """Overlapping windows: unfold every window into trailing dims, softmax over them."""
    windows = x
    first = x.ndim - dims
    for axis, (k, s) in enumerate(zip(kernel, strides, strict=True)):
        windows = windows.unfold(first + axis, k, s)
    windows = windows.flatten(start_dim=x.ndim)  # [..., *out, |R|]
    weights = torch.softmax(windows.detach() if grad == "weights" else windows, dim=-1)
    return (weights * windows).sum(dim=-1)


def soft_pool1d(
    x: torch.Tensor, kernel_size: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
    grad: str = "autograd",
) -> torch.Tensor:
    """SoftPool over ``[B, C, L]``."""
    return soft_pool(x, 1, kernel_size, stride, grad)


def soft_pool2d(
    x: torch.Tensor, kernel_size: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
    grad: str = "autograd",
) -> torch.Tensor:
    """SoftPool over ``[B, C, H, W]``."""
    return soft_pool(x, 2, kernel_size, stride, grad)


def soft_pool3d(
    x: torch.Tensor, kernel_size: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
    grad: str = "autograd",
) -> torch.Tensor:
    """SoftPool over ``[B, C, T, H, W]``; MTConv uses ``kernel_size=(1, 2, 2)`` (spatial only)."""
    return soft_pool(x, 3, kernel_size, stride, grad)


class _SoftPoolNd(nn.Module):
    dims = 0

    def __init__(
        self,
        kernel_size: int | Sequence[int] = 2,
        stride: int | Sequence[int] | None = None,
        grad: str = "autograd",
    ):
        super().__init__()
        if grad not in GRAD_MODES:
            raise ValueError(f"SoftPool{self.dims}d: grad={grad!r}; expected one of {', '.join(GRAD_MODES)}")
        self.kernel_size = _tuple(kernel_size, self.dims, "kernel_size")
        self.stride = self.kernel_size if stride is None else _tuple(stride, self.dims, "stride")
        self.grad = grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return soft_pool(x, self.dims, self.kernel_size, self.stride, self.grad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, grad={self.grad!r}"


class SoftPool1d(_SoftPoolNd):
    """SoftPool over ``[B, C, L]`` windows (Eq. 5.5)."""

    dims = 1


class SoftPool2d(_SoftPoolNd):
    """SoftPool over ``[B, C, H, W]`` windows (Eq. 5.5)."""

    dims = 2


class SoftPool3d(_SoftPoolNd):
    """SoftPool over ``[B, C, T, H, W]`` windows (Eq. 5.5)."""

    dims = 3
