"""Two-stream building blocks: spatial and temporal fusion, flow stacking, temporal filter inflation,
sub-batch BatchNorm (Feichtenhofer 2017).

Everything works on the Conv3d layout ``[B, C, T, H, W]``; a two-stream "chunk" network (2D ConvNet
applied per frame) is a network of ``1 x k x k`` convs, so the T chunks ride along in the time axis.

* :class:`SpatialFusion` — Ch. 3 §3.3.1, Eq. 3.1-3.5: ``sum``, ``max``, ``concat`` (interleaved,
  Eq. 3.3), ``conv`` (concat then a ``2C -> C`` conv with bias, initialised as two stacked identities
  so that it *is* sum fusion at the start; a ReLU follows, as in the author's code) and ``bilinear``
  (Eq. 3.5, per frame, with the signed square root and L2 normalisation used before the SVM). With a
  ``3 x 3 x 3`` kernel the conv fusion is Ch. 3's 3D conv fusion (§3.3.3, Eq. 3.6), its identities
  spread over a normalised Gaussian (σ = 1) and weighted 0.25 (appearance) / 0.75 (motion) — the
  authors' code values (the text: "motion ×3"; see docs/deviations.md, 'Two-stream fusion
  initialisation and the motion stream's conv1').
* :func:`pool3d` — 3D max pooling ("pool5", *(code)* kernel 2x2x5 = ``(5, 2, 2)``, stride 2).
* :func:`stack_flow` — L flows around each chunk stacked to ``2L`` channels, interleaved u1, v1, u2, ...
  (the *(code)* layout, centre frame t covers t-L/2 ... t+L/2-1).
* :func:`inflate_first_conv` — the motion stream's conv1 from an RGB conv1 (Ch. 4 §4.3.1 "replicating
  the three RGB filter channels to 2L = 20"); the mean over RGB, tiled to 2L, scaled by
  3/(2L) so a flow stack whose channels all equal one grey image gives the RGB filter's response.
* :func:`inflate_temporal` — Ch. 4 Eq. 4.5: a ``1x1`` conv becomes ``1x1xT'`` with weights ``w/T'``.
* :class:`IdentityTemporalConv` — Ch. 5 §5.3.3: ``x * (1 ⊗ f) + b`` with f = [0, 1, 0] (exact no-op) or
  [1/3, 1/3, 1/3], b = 0; a learnable C x C temporal conv.
* :class:`SubBatchNorm3d` — Ch. 4 §4.3.4: BatchNorm moments from sub-batches of ``sub_batch`` clips
  while SGD uses the full batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FusionKind = Literal["sum", "max", "concat", "conv", "bilinear"]
FUSION_KINDS: tuple[str, ...] = ("sum", "max", "concat", "conv", "bilinear")


def interleave_channels(appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
    """Concatenation fusion, Eq. 3.3: ``y[2d] = xa[d]``, ``y[2d-1] = xb[d]`` (1-based d).

    0-based that is ``y[2k] = motion[k]``, ``y[2k+1] = appearance[k]``. ``[B, C, ...] x2 -> [B, 2C, ...]``.
    """
    if appearance.shape != motion.shape:
        raise ValueError(
            f"fusion needs equal shapes; got appearance {tuple(appearance.shape)} and motion "
            f"{tuple(motion.shape)} (pad or resample one stream to match)"
        )
    return torch.stack((motion, appearance), dim=2).flatten(1, 2)


def gaussian_kernel3d(size: tuple[int, int, int], sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian ``[kt, kh, kw]`` centred in the kernel, normalised to sum 1 (Ch. 3 §3.3.5)."""
    axes = []
    for k in size:
        r = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
        axes.append(torch.exp(-(r**2) / (2 * sigma**2)))
    kernel = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (kernel / kernel.sum()).float()


def bilinear_pool(appearance: torch.Tensor, motion: torch.Tensor, normalise: bool = True) -> torch.Tensor:
    """Bilinear fusion, Eq. 3.5: ``Σ_ij xa_ij^T xb_ij`` per frame, ``[B, C, T, H, W] x2 -> [B, C*C, T]``.

    With ``normalise`` the signed square root and L2 normalisation over the C² vector follow (the
    power/L2 normalisation the thesis applies before its linear SVM).
    """
    if appearance.shape != motion.shape:
        raise ValueError(
            f"bilinear fusion needs equal shapes; got {tuple(appearance.shape)} and {tuple(motion.shape)}"
        )
    b, c, t = appearance.shape[:3]
    xa = appearance.flatten(3)  # [B, C, T, HW]
    xb = motion.flatten(3)
    y = torch.einsum("bctn,bdtn->btcd", xa, xb).reshape(b, t, c * c).transpose(1, 2)  # [B, C², T]
    if normalise:
        y = torch.sign(y) * torch.sqrt(y.abs() + 1e-12)
        y = F.normalize(y, dim=1)
    return y


class SpatialFusion(nn.Module):
    """Fuse appearance and motion maps pixel by pixel (Ch. 3 §3.3.1), ``forward(xa, xb)``.

    ``[B, C, T, H, W] x2 -> [B, C', T, H, W]`` with C' = C (sum, max, conv) or 2C (concat); bilinear gives
    ``[B, C², T]``. ``kernel`` applies to ``conv`` only: ``(1, 1, 1)`` is Eq. 3.4, ``(3, 3, 3)`` the 3D conv
    fusion of Eq. 3.6. ``weights = (appearance, motion)`` scales the two stacked identities of the conv
    initialisation; default ``(1, 1)`` (sum) for a 1x1x1 kernel and ``(0.25, 0.75)`` for a larger one.
    """

    def __init__(
        self,
        kind: FusionKind,
        channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        weights: tuple[float, float] | None = None,
        sigma: float = 1.0,
        activation: bool = True,
    ):
        super().__init__()
        if kind not in FUSION_KINDS:
            raise ValueError(f"unknown fusion {kind!r}; expected one of {', '.join(FUSION_KINDS)}")
        self.kind = kind
        self.channels = channels
        self.conv: nn.Conv3d | None = None
        self.activation = activation and kind == "conv"
        if kind == "conv":
            padding = tuple(k // 2 for k in kernel)
            self.conv = nn.Conv3d(2 * channels, channels, kernel, padding=padding, bias=True)
            if weights is None:
                weights = (1.0, 1.0) if tuple(kernel) == (1, 1, 1) else (0.25, 0.75)
            self.reset_as_sum(weights, sigma)

    @property
    def out_channels(self) -> int:
        return {"concat": 2 * self.channels, "bilinear": self.channels**2}.get(self.kind, self.channels)

    @torch.no_grad()
    def reset_as_sum(self, weights: tuple[float, float] = (1.0, 1.0), sigma: float = 1.0) -> None:
        """Conv fusion init: stacked identities (``weights[0]·I`` appearance, ``weights[1]·I`` motion),
        spread over a normalised Gaussian when the kernel is larger than 1x1x1; zero bias."""
        assert self.conv is not None
        kernel = tuple(self.conv.kernel_size)
        spread = gaussian_kernel3d(kernel, sigma) if kernel != (1, 1, 1) else torch.ones(1, 1, 1)
        w = torch.zeros_like(self.conv.weight)
        idx = torch.arange(self.channels)
        w[idx, 2 * idx + 1] = weights[0] * spread  # appearance sits at odd interleaved positions
        w[idx, 2 * idx] = weights[1] * spread  # motion at even ones (Eq. 3.3)
        self.conv.weight.copy_(w)
        self.conv.bias.zero_()

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        if self.kind == "bilinear":
            return bilinear_pool(appearance, motion)
        if appearance.shape != motion.shape:
            raise ValueError(
                f"{self.kind} fusion needs equal shapes; got appearance {tuple(appearance.shape)} and "
                f"motion {tuple(motion.shape)}"
            )
        if self.kind == "sum":
            return appearance + motion
        if self.kind == "max":
            return torch.maximum(appearance, motion)
        y = interleave_channels(appearance, motion)
        if self.conv is not None:
            y = self.conv(y)
            if self.activation:
                y = F.relu(y)
        return y


def pool3d(
    x: torch.Tensor, kernel: tuple[int, int, int] = (5, 2, 2), stride: tuple[int, int, int] = (2, 2, 2)
) -> torch.Tensor:
    """3D max pooling (Ch. 3 §3.3.3; *(code)* pool5 2x2x5, stride 2): ``[B,C,T,H,W] -> [B,C,T',H',W']``.

    Kernel sizes larger than the input (short clips, tiny frames) are clamped to the input size.
    """
    size = x.shape[2:]
    k = tuple(min(kk, s) for kk, s in zip(kernel, size, strict=True))
    return F.max_pool3d(x, kernel_size=k, stride=stride)


def stack_flow(flow: torch.Tensor, frames: int) -> torch.Tensor:
    """Stack the ``frames`` (L) flow fields around each time step: ``[B, 2, T, H, W] -> [B, 2L, T, H, W]``.

    Channel order u_1, v_1, u_2, v_2, ... (the *(code)* interleaved layout); step t covers
    ``t - L//2 ... t + L - L//2 - 1`` (t-5 ... t+4 for L = 10), indices clamped to the clip (edge
    replication). L = 1 returns the input.
    """
    if flow.ndim != 5 or flow.shape[1] != 2:
        raise ValueError(f"stack_flow expects flow [B, 2, T, H, W] (u, v); got {tuple(flow.shape)}")
    if frames < 1:
        raise ValueError(f"flow frames L must be >= 1; got {frames}")
    if frames == 1:
        return flow
    t = flow.shape[2]
    offsets = torch.arange(frames, device=flow.device) - frames // 2
    index = (torch.arange(t, device=flow.device)[:, None] + offsets[None, :]).clamp(0, t - 1)  # [T, L]
    window = flow[:, :, index]  # [B, 2, T, L, H, W]
    return window.permute(0, 3, 1, 2, 4, 5).flatten(1, 2)  # [B, L*2 (u1 v1 u2 v2 ...), T, H, W]


def inflate_first_conv(
    weight: torch.Tensor, in_channels: int, mode: Literal["mean", "replicate"] = "mean", rescale: bool = True
) -> torch.Tensor:
    """An RGB conv1 weight ``[O, 3, ...]`` turned into one for ``in_channels`` (2L) flow channels.

    ``mean`` (docs/deviations.md, 'Two-stream fusion initialisation and the motion stream's conv1'): the mean
    over RGB tiled to ``in_channels``; ``replicate``: the RGB
    filters repeated cyclically (r, g, b, r, g, b, ...). ``rescale`` multiplies by ``3 / in_channels``,
    so the summed response keeps the RGB filter's scale.
    """
    if weight.ndim < 3:
        raise ValueError(f"conv weight must be [out, in, ...]; got shape {tuple(weight.shape)}")
    rgb = weight.shape[1]
    if mode == "mean":
        out = weight.mean(dim=1, keepdim=True).repeat_interleave(in_channels, dim=1)
        return out * (rgb / in_channels) if rescale else out
    if mode == "replicate":
        reps = math.ceil(in_channels / rgb)
        out = weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels]
        return out * (rgb / in_channels) if rescale else out
    raise ValueError(f"inflate_first_conv mode must be 'mean' or 'replicate'; got {mode!r}")


def inflate_temporal(conv: nn.Conv3d, taps: int = 3) -> nn.Conv3d:
    """Ch. 4 Eq. 4.5: a ``1x1x1`` conv becomes ``taps x 1 x 1`` with ``ŵ(t) = w / taps`` for every t.

    Zero padding ``taps // 2`` keeps the number of chunks (*(code)* T' = 3, padding 1). The result is an
    averaging filter over time: on a temporally constant input (away from the clip ends) it computes
    exactly what the 1x1x1 conv computed.
    """
    if tuple(conv.kernel_size) != (1, 1, 1) or conv.groups != 1:
        raise ValueError(f"inflate_temporal needs an ungrouped 1x1x1 conv; got kernel {conv.kernel_size}")
    out = nn.Conv3d(
        conv.in_channels,
        conv.out_channels,
        kernel_size=(taps, 1, 1),
        stride=conv.stride,
        padding=(taps // 2, 0, 0),
        bias=conv.bias is not None,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        out.weight.copy_(conv.weight.expand(-1, -1, taps, -1, -1) / taps)
        if conv.bias is not None:
            out.bias.copy_(conv.bias)
    return out


class IdentityTemporalConv(nn.Conv3d):
    """Temporal filter with feature identity (Ch. 5 §5.3.3): ``x_{l+1} = x_l * (1 ⊗ f) + b``, b = 0.

    A learnable ``C x C x taps`` conv whose initial weight is the channel identity times the temporal
    filter f: ``init="identity"`` gives f = [0, 1, 0] (an exact no-op), ``"average"`` gives
    [1/3, 1/3, 1/3] (temporal smoothing). Zero padding keeps T. ``[B, C, T, H, W] -> [B, C, T, H, W]``.
    """

    def __init__(self, channels: int, taps: int = 3, init: Literal["identity", "average"] = "identity"):
        if taps % 2 != 1:
            raise ValueError(f"identity temporal conv needs an odd number of taps; got {taps}")
        super().__init__(channels, channels, kernel_size=(taps, 1, 1), padding=(taps // 2, 0, 0), bias=True)
        self.init = init
        self.reset_to_identity()

    @torch.no_grad()
    def reset_to_identity(self) -> None:
        taps = self.kernel_size[0]
        if self.init == "identity":
            f = torch.zeros(taps)
            f[taps // 2] = 1.0
        elif self.init == "average":
            f = torch.full((taps,), 1.0 / taps)
        else:
            raise ValueError(f"temporal filter init must be 'identity' or 'average', not {self.init!r}")
        w = torch.zeros_like(self.weight)
        idx = torch.arange(self.out_channels)
        w[idx, idx, :, 0, 0] = f.to(w)
        self.weight.copy_(w)
        self.bias.zero_()


class SubBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm whose training-time moments come from sub-batches of ``sub_batch`` samples (Ch. 4 §4.3.4).

    The batch ``[B, C, T, H, W]`` is cut into consecutive groups of ``sub_batch`` clips; each group is
    normalised with its own mean and (biased) variance over ``(clips, T, H, W)``; the running statistics
    move towards the average of the groups' moments. Evaluation uses the running statistics as usual.
    SGD still sees the whole batch. ``sub_batch >= B`` is ordinary BatchNorm.
    """

    def __init__(self, num_features: int, sub_batch: int = 4, **kwargs):
        super().__init__(num_features, **kwargs)
        if sub_batch < 1:
            raise ValueError(f"sub_batch must be >= 1; got {sub_batch}")
        self.sub_batch = sub_batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if not self.training or b <= self.sub_batch:
            return super().forward(x)
        groups = [x[i : i + self.sub_batch] for i in range(0, b, self.sub_batch)]
        outs, means, variances = [], [], []
        dims = [0, *range(2, x.ndim)]
        for g in groups:
            var, mean = torch.var_mean(g, dim=dims, unbiased=False)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = (g - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
            if self.affine:
                y = y * self.weight.view(shape) + self.bias.view(shape)
            outs.append(y)
            n = g.numel() // g.shape[1]
            means.append(mean.detach())
            variances.append(var.detach() * n / max(n - 1, 1))
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(torch.stack(means).mean(0), m)
                self.running_var.lerp_(torch.stack(variances).mean(0), m)
        return torch.cat(outs)


def use_sub_batch_norm(module: nn.Module, sub_batch: int) -> nn.Module:
    """Replace every ``BatchNorm3d`` in ``module`` (in place) by a :class:`SubBatchNorm3d` with the same
    parameters and statistics. Returns ``module``."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm3d) and not isinstance(child, SubBatchNorm3d):
            new = SubBatchNorm3d(
                child.num_features,
                sub_batch,
                eps=child.eps,
                momentum=child.momentum,
                affine=child.affine,
                track_running_stats=child.track_running_stats,
                device=child.weight.device if child.affine else None,
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new)
        else:
            use_sub_batch_norm(child, sub_batch)
    return module
