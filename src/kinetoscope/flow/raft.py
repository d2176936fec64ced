"""RAFT optical flow (Teed & Deng 2020), parameter-exact with torchvision's ``raft_small`` / ``raft_large``.

Ilic 2024 §4.3 computes the flow that moves the appearance-free noise with RAFT, and §4.5 feeds RAFT
flow (Sintel weights, frozen) to the flow stream of E2S-X3D. RAFT, as in Teed & Deng 2020 §3:

1. **Feature encoder** ``g`` on both frames and **context encoder** ``h`` on the first frame, each a
   7×7 stride-2 stem, three stages of two residual (large) or bottleneck (small) blocks (strides 1, 2,
   2) and a 1×1 projection: features at 1/8 resolution.
2. **All-pairs correlation volume** ``C(p, q) = <g1(p), g2(q)> / sqrt(D)`` for every pixel ``p`` of
   frame 1 and ``q`` of frame 2, and a 4-level pyramid that average-pools the ``q`` dimensions by 1, 2,
   4, 8 (§3.2).
3. **Lookup**: around the current correspondence ``x' = p + f(p)`` each level ``l`` is sampled
   bilinearly on the ``(2r + 1)²`` grid ``x'/2^l + d``, ``||d||_inf <= r`` (§3.2; ``r`` = 4 large, 3
   small).
4. **Update operator**: a motion encoder (correlation and flow convs), a ConvGRU (two separable
   1×5 / 5×1 GRUs in large, one 3×3 GRU in small) whose hidden state starts at ``tanh`` of half the
   context features, and a flow head giving ``Δf``; ``f <- f + Δf`` for ``iterations`` steps (§3.3).
5. **Upsampling** of the 1/8 flow to full resolution: convex combination of the 3×3 coarse neighbours
   with weights predicted from the hidden state (large, §3.3 "Upsampling"), bilinear (small).

The module and parameter names are torchvision's (``torchvision/models/optical_flow/raft.py``), so a
torchvision checkpoint loads by name: a conv-norm-ReLU unit is a ``Sequential`` (conv ``.0``, norm
``.1`` — InstanceNorm without parameters in the feature encoders, BatchNorm in the large context
encoder, none in the small one — then ReLU). Parameters: ``raft_small`` 990,162, ``raft_large``
5,257,536 (torchvision's ``num_params``). The neighbourhood order of the lookup is torchvision's: the
correlation channel of level ``l`` and offset ``(dx, dy)`` is ``l (2r+1)² + (dx + r)(2r+1) + (dy + r)``
(x offset major); the trained weights depend on it.

Weights: torchvision's checkpoints (``raft_large_C_T_SKHT_V2-ff5fadd5.pth``, the Sintel fine-tuned
default that Ilic 2024 §4.5 describes, or ``raft_small_C_T_V2-01064c6d.pth``) are imported once with
``kinetoscope models import --from torchvision raft_large FILE`` into the cache directory, where
``compute_flow(frames, method="raft")`` finds them (see :func:`raft_weights_path`).

Input size: the model needs height and width divisible by 8 and at least 128 (below that the coarsest
correlation level is one pixel wide and the lookup's normalisation divides by zero). The estimator pads
the frames by edge replication, centred (as the RAFT authors' ``InputPadder``), to the next multiple of 8
and at least 128 pixels, and crops the flow back; so any frame size works (docs/deviations.md, "RAFT on
frames smaller than 128 px"). ``upsample`` optionally
resizes the frames bilinearly first (Ilic 2024 §4.5: "we add an up-sampling layer to the RGB images prior
to RAFT") and maps the flow back to the frame size with its vectors divided by the factor.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.checkpoint_io import WeightMismatchError, compare_state, read_checkpoint, save_safetensors

MIN_SIZE = 128  # smallest side the 4-level correlation pyramid supports (torchvision's ``min_size``)
WEIGHTS_ENV = "KINETOSCOPE_RAFT_WEIGHTS"
TORCHVISION_FILES = {
    "large": "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
    "small": "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth",
}


@dataclass(frozen=True)
class RaftConfig:
    """One RAFT variant (Teed & Deng 2020 §3 and appendix; torchvision's constructor arguments)."""

    feature_layers: tuple[int, ...]  # stem, stage 1, 2, 3 widths, output dim
    context_layers: tuple[int, ...]
    block: str  # "residual" | "bottleneck"
    context_norm: str | None  # "batch" | None (feature encoders always use instance norm)
    levels: int
    radius: int
    corr_layers: tuple[int, ...]
    flow_layers: tuple[int, int]
    motion_channels: int
    hidden: int
    gru_kernels: tuple[tuple[int, int], ...]
    flow_head: int
    convex_upsampling: bool


VARIANTS = {
    "large": RaftConfig(
        feature_layers=(64, 64, 96, 128, 256), context_layers=(64, 64, 96, 128, 256), block="residual",
        context_norm="batch", levels=4, radius=4, corr_layers=(256, 192), flow_layers=(128, 64),
        motion_channels=128, hidden=128, gru_kernels=((1, 5), (5, 1)), flow_head=256, convex_upsampling=True,
    ),
    "small": RaftConfig(
        feature_layers=(32, 32, 64, 96, 128), context_layers=(32, 32, 64, 96, 160), block="bottleneck",
        context_norm=None, levels=4, radius=3, corr_layers=(96,), flow_layers=(64, 32),
        motion_channels=82, hidden=96, gru_kernels=((3, 3),), flow_head=128, convex_upsampling=False,
    ),
}


def conv_unit(cin: int, cout: int, kernel: int, stride: int = 1, norm: str | None = None,
              relu: bool = True) -> nn.Sequential:
    """Conv (with bias), optional norm, optional ReLU, as one ``Sequential`` (``.0`` conv, ``.1`` norm)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2)]
    if norm == "instance":
        layers.append(nn.InstanceNorm2d(cout))
    elif norm == "batch":
        layers.append(nn.BatchNorm2d(cout))
    elif norm is not None:
        raise ValueError(f"norm {norm!r} is not instance, batch or None")
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two 3×3 conv-norm-ReLU units and a shortcut (1×1 conv-norm when strided); ReLU after the sum."""

    def __init__(self, cin: int, cout: int, norm: str | None, stride: int = 1) -> None:
        super().__init__()
        self.convnormrelu1 = conv_unit(cin, cout, 3, stride, norm)
        self.convnormrelu2 = conv_unit(cout, cout, 3, 1, norm)
        self.downsample = nn.Identity() if stride == 1 else conv_unit(cin, cout, 1, stride, norm, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.downsample(x) + self.convnormrelu2(self.convnormrelu1(x)))


class BottleneckBlock(nn.Module):
    """1×1 (width/4), 3×3 (width/4, strided), 1×1 (width) conv-norm-ReLU units and a shortcut."""

    def __init__(self, cin: int, cout: int, norm: str | None, stride: int = 1) -> None:
        super().__init__()
        self.convnormrelu1 = conv_unit(cin, cout // 4, 1, 1, norm)
        self.convnormrelu2 = conv_unit(cout // 4, cout // 4, 3, stride, norm)
        self.convnormrelu3 = conv_unit(cout // 4, cout, 1, 1, norm)
        self.downsample = nn.Identity() if stride == 1 else conv_unit(cin, cout, 1, stride, norm, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convnormrelu3(self.convnormrelu2(self.convnormrelu1(x)))
        return F.relu(self.downsample(x) + y)


class Encoder(nn.Module):
    """Feature / context encoder: 7×7 stride-2 stem, three stages of two blocks (strides 1, 2, 2), 1×1
    projection; output at 1/8 resolution (Teed & Deng 2020 §3.1)."""

    def __init__(self, layers: Sequence[int], block: str, norm: str | None) -> None:
        super().__init__()
        make = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}[block]
        self.convnormrelu = conv_unit(3, layers[0], 7, 2, norm)
        self.layer1 = nn.Sequential(make(layers[0], layers[1], norm, 1), make(layers[1], layers[1], norm))
        self.layer2 = nn.Sequential(make(layers[1], layers[2], norm, 2), make(layers[2], layers[2], norm))
        self.layer3 = nn.Sequential(make(layers[2], layers[3], norm, 2), make(layers[3], layers[3], norm))
        self.conv = nn.Conv2d(layers[3], layers[4], 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.layer3(self.layer2(self.layer1(self.convnormrelu(x)))))


class MotionEncoder(nn.Module):
    """Encodes the looked-up correlations and the current flow; the flow itself is appended (§3.3)."""

    def __init__(self, corr_channels: int, corr_layers: Sequence[int], flow_layers: Sequence[int],
                 out_channels: int) -> None:
        super().__init__()
        self.convcorr1 = conv_unit(corr_channels, corr_layers[0], 1)
        self.convcorr2 = conv_unit(corr_layers[0], corr_layers[1], 3) if len(corr_layers) == 2 else nn.Identity()
        self.convflow1 = conv_unit(2, flow_layers[0], 7)
        self.convflow2 = conv_unit(flow_layers[0], flow_layers[1], 3)
        self.conv = conv_unit(corr_layers[-1] + flow_layers[1], out_channels - 2, 3)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        corr = self.convcorr2(self.convcorr1(corr))
        motion = self.convflow2(self.convflow1(flow))
        return torch.cat([self.conv(torch.cat([corr, motion], dim=1)), flow], dim=1)


class ConvGRU(nn.Module):
    """``z = σ(conv[h, x])``, ``r = σ(conv[h, x])``, ``q = tanh(conv[r h, x])``, ``h <- (1 - z) h + z q``."""

    def __init__(self, input_size: int, hidden: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        padding = (kernel[0] // 2, kernel[1] // 2)
        self.convz = nn.Conv2d(hidden + input_size, hidden, kernel, padding=padding)
        self.convr = nn.Conv2d(hidden + input_size, hidden, kernel, padding=padding)
        self.convq = nn.Conv2d(hidden + input_size, hidden, kernel, padding=padding)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class RecurrentBlock(nn.Module):
    """One ConvGRU per kernel shape, applied in turn (large: 1×5 then 5×1; small: one 3×3)."""

    def __init__(self, input_size: int, hidden: int, kernels: Sequence[tuple[int, int]]) -> None:
        super().__init__()
        for i, kernel in enumerate(kernels, start=1):
            self.add_module(f"convgru{i}", ConvGRU(input_size, hidden, kernel))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for gru in self.children():
            h = gru(h, x)
        return h


class FlowHead(nn.Module):
    """3×3 conv, ReLU, 3×3 conv to the flow update ``Δf`` (2 channels)."""

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(hidden, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(h)))


class UpdateBlock(nn.Module):
    """The update operator of Teed & Deng 2020 §3.3: motion encoder, ConvGRU, flow head."""

    def __init__(self, config: RaftConfig) -> None:
        super().__init__()
        corr_channels = config.levels * (2 * config.radius + 1) ** 2
        context = config.context_layers[-1] - config.hidden
        self.motion_encoder = MotionEncoder(corr_channels, config.corr_layers, config.flow_layers,
                                            config.motion_channels)
        self.recurrent_block = RecurrentBlock(config.motion_channels + context, config.hidden, config.gru_kernels)
        self.flow_head = FlowHead(config.hidden, config.flow_head)

    def forward(self, h: torch.Tensor, context: torch.Tensor, corr: torch.Tensor,
                flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.recurrent_block(h, torch.cat([context, self.motion_encoder(flow, corr)], dim=1))
        return h, self.flow_head(h)


class MaskPredictor(nn.Module):
    """Convex-upsampling weights: 3×3 conv (256) + ReLU, 1×1 conv to 8·8·9, scaled by 0.25 (§3.3)."""

    def __init__(self, hidden: int, width: int = 256) -> None:
        super().__init__()
        self.convrelu = conv_unit(hidden, width, 3)
        self.conv = nn.Conv2d(width, 8 * 8 * 9, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return 0.25 * self.conv(self.convrelu(h))


def correlation_pyramid(fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """All-pairs correlation ``<g1(p), g2(q)> / sqrt(D)`` as ``[B·h·w, 1, h, w]`` (one map over ``q`` per
    ``p``), and ``levels - 1`` further levels average-pooling the ``q`` dimensions by 2 each (§3.2)."""
    b, d, h, w = fmap1.shape
    volume = torch.einsum("bdp,bdq->bpq", fmap1.reshape(b, d, h * w), fmap2.reshape(b, d, h * w))
    volume = (volume / math.sqrt(d)).reshape(b * h * w, 1, h, w)
    pyramid = [volume]
    for _ in range(levels - 1):
        volume = F.avg_pool2d(volume, 2, stride=2)
        pyramid.append(volume)
    return pyramid


def lookup(pyramid: Sequence[torch.Tensor], coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Correlation features at ``coords`` ``[B, 2, h, w]`` (x, y in 1/8-resolution pixels of frame 2):
    level ``l`` sampled bilinearly (zero outside) at ``coords / 2^l + (dx, dy)``, ``|dx|, |dy| <= radius``.
    Returns ``[B, levels (2r+1)², h, w]``; channel ``l (2r+1)² + (dx + r)(2r+1) + (dy + r)``."""
    b, _, h, w = coords.shape
    side = 2 * radius + 1
    steps = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    dx, dy = torch.meshgrid(steps, steps, indexing="ij")  # grid row = x offset, as torchvision
    offsets = torch.stack([dx, dy], dim=-1)  # [side, side, 2]
    centres = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2)
    features = []
    for level, volume in enumerate(pyramid):
        points = centres / 2**level + offsets
        size = torch.tensor([volume.shape[-1] - 1, volume.shape[-2] - 1], device=coords.device, dtype=coords.dtype)
        sampled = F.grid_sample(volume, 2 * points / size - 1, mode="bilinear", align_corners=True)
        features.append(sampled.reshape(b, h, w, side * side))
    return torch.cat(features, dim=-1).permute(0, 3, 1, 2).contiguous()


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Full-resolution flow as a convex combination of the 3×3 coarse neighbours (§3.3): ``flow``
    ``[B, 2, h, w]``, ``mask`` ``[B, 9·8·8, h, w]`` (softmax over the 9 neighbours) -> ``[B, 2, 8h, 8w]``."""
    b, _, h, w = flow.shape
    weights = mask.reshape(b, 1, 9, 8, 8, h, w).softmax(dim=2)
    neighbours = F.unfold(8 * flow, 3, padding=1).reshape(b, 2, 9, 1, 1, h, w)
    fine = (weights * neighbours).sum(dim=2)  # [B, 2, 8 (row in cell), 8 (column in cell), h, w]
    return fine.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, 8 * h, 8 * w)


class RAFT(nn.Module):
    """RAFT (Teed & Deng 2020). ``forward(image1, image2, iterations=12)`` on ``[B, 3, H, W]`` images in
    [-1, 1] (H, W divisible by 8 and >= 128) returns the list of the ``iterations`` flow estimates
    ``[B, 2, H, W]`` (u, v px, frame 1 -> frame 2), the last the most refined."""

    def __init__(self, variant: str = "large") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"RAFT variant {variant!r} is not one of {', '.join(VARIANTS)}")
        config = VARIANTS[variant]
        self.variant = variant
        self.config = config
        self.feature_encoder = Encoder(config.feature_layers, config.block, "instance")
        self.context_encoder = Encoder(config.context_layers, config.block, config.context_norm)
        self.update_block = UpdateBlock(config)
        self.mask_predictor = MaskPredictor(config.hidden) if config.convex_upsampling else None

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iterations: int = 12) -> list[torch.Tensor]:
        if image1.shape != image2.shape or image1.ndim != 4 or image1.shape[1] != 3:
            raise ValueError(f"RAFT needs two [B, 3, H, W] images of one shape, got {tuple(image1.shape)} and "
                             f"{tuple(image2.shape)}")
        b, _, height, width = image1.shape
        if height % 8 or width % 8 or min(height, width) < MIN_SIZE:
            raise ValueError(f"RAFT needs H and W divisible by 8 and >= {MIN_SIZE}, got {height}x{width} "
                             "(RaftEstimator pads frames for you)")
        if iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        fmap1, fmap2 = self.feature_encoder(torch.cat([image1, image2], dim=0)).chunk(2, dim=0)
        pyramid = correlation_pyramid(fmap1, fmap2, self.config.levels)
        hidden, context = self.context_encoder(image1).split(
            [self.config.hidden, self.config.context_layers[-1] - self.config.hidden], dim=1)
        hidden, context = torch.tanh(hidden), F.relu(context)
        h, w = height // 8, width // 8
        ys, xs = torch.meshgrid(torch.arange(h, device=image1.device), torch.arange(w, device=image1.device),
                                indexing="ij")
        coords0 = torch.stack([xs, ys]).to(fmap1.dtype).expand(b, 2, h, w)
        coords1 = coords0.clone()
        estimates = []
        for _ in range(iterations):
            coords1 = coords1.detach()  # no gradient through the lookup position (§3.3)
            corr = lookup(pyramid, coords1, self.config.radius)
            hidden, delta = self.update_block(hidden, context, corr, coords1 - coords0)
            coords1 = coords1 + delta
            flow = coords1 - coords0
            if self.mask_predictor is None:
                estimates.append(8 * F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=True))
            else:
                estimates.append(convex_upsample(flow, self.mask_predictor(hidden)))
        return estimates


# ---------------------------------------------------------------------------------------------------
# Weights: import torchvision checkpoints, find them again


def detect_variant(state: dict[str, torch.Tensor]) -> str:
    """``large`` if the state dict has the convex-upsampling mask predictor or 64-channel stem, else ``small``."""
    stem = state.get("feature_encoder.convnormrelu.0.weight")
    if any(k.startswith("mask_predictor.") for k in state) or (stem is not None and stem.shape[0] == 64):
        return "large"
    return "small"


def raft_from_state(state: dict[str, torch.Tensor], what: str, variant: str | None = None) -> RAFT:
    """A RAFT model (eval mode) holding ``state`` (torchvision's key layout); ``WeightMismatchError``
    lists every missing, unexpected and mis-shaped key."""
    variant = variant or detect_variant(state)
    model = RAFT(variant)
    missing, unexpected, shapes = compare_state(state, model.state_dict(), repr)
    if missing or unexpected or shapes:
        raise WeightMismatchError(f"{what} does not fit torchvision's raft_{variant} layout:", missing,
                                  unexpected, shapes)
    model.load_state_dict(state, strict=True)
    return model.eval()


def default_weights_path(variant: str = "large") -> Path:
    """Where ``models import --from torchvision raft_<variant>`` writes and :func:`raft_weights_path` looks:
    ``<cache>/raft/raft_<variant>.safetensors`` (cache: ``$KINETOSCOPE_CACHE`` or ``~/.cache/kinetoscope``)."""
    from kinetoscope.utils import cache_root

    return cache_root() / "raft" / f"raft_{variant}.safetensors"


def import_torchvision_raft(checkpoint: str | Path, out_path: str | Path | None = None,
                            variant: str | None = None, write: bool = True) -> tuple[RAFT, dict[str, object]]:
    """Read a torchvision RAFT checkpoint (``weights_only``), check every key and shape against
    ``raft_<variant>`` (detected from the keys when ``None``) and, with ``write``, save it as
    ``.safetensors`` to ``out_path`` (default :func:`default_weights_path`, where
    ``compute_flow(..., "raft")`` looks), atomically; nothing is written when a key does not fit.
    Returns the model and what was done (variant, tensors, parameters, out_path)."""
    checkpoint = Path(checkpoint)
    state = read_checkpoint(checkpoint)
    model = raft_from_state(state, f"checkpoint {checkpoint}", variant)
    out = None
    if write:
        out = Path(out_path) if out_path is not None else default_weights_path(model.variant)
        save_safetensors(model, out, {"kinetoscope_flow": f"raft_{model.variant}",
                                      "imported_from": f"torchvision:{checkpoint.name}"})
    return model, {"variant": model.variant, "tensors": len(state),
                   "parameters": sum(p.numel() for p in model.parameters()), "out_path": out}


def raft_weights_path(variant: str = "large", weights: str | Path | None = None) -> Path:
    """The weights file to use: ``weights`` if given, else ``$KINETOSCOPE_RAFT_WEIGHTS``, else
    :func:`default_weights_path`. ``FileNotFoundError`` says where to get the file and how to import it."""
    if variant not in VARIANTS:
        raise ValueError(f"RAFT variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if weights is not None:
        path, origin = Path(weights), "the 'weights' option"
    elif os.environ.get(WEIGHTS_ENV):
        path, origin = Path(os.environ[WEIGHTS_ENV]), f"${WEIGHTS_ENV}"
    else:
        path, origin = default_weights_path(variant), "the kinetoscope cache"
    if path.is_file():
        return path
    raise FileNotFoundError(
        f"RAFT weights for raft_{variant} not found: {path} (from {origin}) does not exist. RAFT is not "
        f"trained here; get torchvision's checkpoint {TORCHVISION_FILES[variant]} on a machine with internet, "
        f"then run `kinetoscope models import --from torchvision raft_{variant} FILE` (writes "
        f"{default_weights_path(variant)}), or point ${WEIGHTS_ENV} or the flow option weights= at the .pth "
        "or .safetensors file. Without weights, use flow method 'dis', 'farneback' or 'tvl1'."
    )


def read_raft_weights(path: str | Path, variant: str | None = None) -> RAFT:
    """RAFT from a ``.safetensors`` file (written by the importer) or a torchvision ``.pth`` checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from kinetoscope.checkpoint_io import read_safetensors

        state = read_safetensors(path)  # checked against its recorded sha256
    else:
        state = read_checkpoint(path)
    return raft_from_state(state, str(path), variant)


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, modified: float, device: str) -> RAFT:
    return read_raft_weights(path).to(device)


def load_raft(variant: str = "large", weights: str | Path | None = None, device: str | torch.device | None = None
              ) -> RAFT:
    """The trained RAFT (eval mode) on ``device`` (default: :func:`default_device`, what the command's
    ``--accelerator`` says); the loaded model is kept, so per-video calls read the file once."""
    path = raft_weights_path(variant, weights)
    device = str(torch.device(device) if device is not None else default_device())
    model = _cached_model(str(path.resolve()), path.stat().st_mtime, device)
    if model.variant != variant:
        raise ValueError(f"{path} holds raft_{model.variant} weights, not raft_{variant}; set the flow option "
                         f"variant={model.variant!r}")
    return model


def default_device() -> torch.device:
    """The device of ``--accelerator`` / ``$KINETOSCOPE_ACCELERATOR`` (``auto``: CUDA, then MPS, then CPU)."""
    from kinetoscope.device import resolve_device

    return resolve_device("auto")


# ---------------------------------------------------------------------------------------------------
# The flow estimator


def padding_for(height: int, width: int, min_size: int = MIN_SIZE) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` edge padding to a multiple of 8 and at least ``min_size``, centred."""
    def extra(n: int) -> int:
        return max(min_size, -(-n // 8) * 8) - n

    dh, dw = extra(height), extra(width)
    return dw // 2, dw - dw // 2, dh // 2, dh - dh // 2


class RaftEstimator:
    """Flow between frame pairs with a RAFT model: ``estimator(previous, following)`` for one pair of
    ``uint8 [H, W, 3]`` (or ``[H, W]`` grey) frames, :meth:`estimate_pairs` for many, batched. Frames are
    scaled to [-1, 1], optionally upsampled, edge-padded (see the module docstring), run through
    ``iterations`` refinement steps on the model's device, and the last estimate is cropped back."""

    batched = True  # compute_flow hands it colour frames and all pairs at once

    def __init__(self, model: RAFT, iterations: int = 12, batch_size: int = 4, upsample: float = 1.0) -> None:
        if iterations < 1 or batch_size < 1 or upsample <= 0:
            raise ValueError(f"iterations ({iterations}) and batch_size ({batch_size}) must be >= 1 and "
                             f"upsample ({upsample}) > 0")
        self.model = model.eval()
        self.iterations = iterations
        self.batch_size = batch_size
        self.upsample = upsample

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _images(self, frames: np.ndarray) -> torch.Tensor:
        """``uint8 [N, H, W, C|-]`` -> padded ``float [N, 3, H', W']`` in [-1, 1] on the model's device."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise ValueError(f"RAFT frames must be uint8, got {frames.dtype}")
        if frames.ndim == 3:
            frames = frames[..., None]
        if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
            raise ValueError(f"RAFT frames must be [N, H, W, 3] (or grey [N, H, W]), got {frames.shape}")
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float()
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        x = x / 127.5 - 1.0
        if self.upsample != 1.0:
            size = (round(frames.shape[1] * self.upsample), round(frames.shape[2] * self.upsample))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.pad(x, padding_for(*x.shape[-2:]), mode="replicate")

    @torch.no_grad()
    def _flow(self, first: torch.Tensor, second: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        flow = self.model(first, second, self.iterations)[-1]
        left, right, top, bottom = padding_for(*size_after(size, self.upsample))
        flow = flow[..., top:flow.shape[-2] - bottom, left:flow.shape[-1] - right]
        if self.upsample != 1.0:
            scale = torch.tensor([size[1] / flow.shape[-1], size[0] / flow.shape[-2]], device=flow.device)
            flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False) * scale.view(1, 2, 1, 1)
        return flow

    def estimate_pairs(self, frames: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
        """Flow of each ``(i, j)`` pair of ``frames`` ``uint8 [T, H, W, C]``: ``float32 [len(pairs), H, W, 2]``."""
        frames = np.asarray(frames)
        size = (frames.shape[1], frames.shape[2])
        out = np.empty((len(pairs), *size, 2), dtype=np.float32)
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            first = self._images(frames[[i for i, _ in chunk]])
            second = self._images(frames[[j for _, j in chunk]])
            flow = self._flow(first, second, size)
            out[start:start + len(chunk)] = flow.permute(0, 2, 3, 1).float().cpu().numpy()
        return out

    def __call__(self, previous: np.ndarray, following: np.ndarray) -> np.ndarray:
        return self.estimate_pairs(np.stack([previous, following]), [(0, 1)])[0]


def size_after(size: tuple[int, int], upsample: float) -> tuple[int, int]:
    return (round(size[0] * upsample), round(size[1] * upsample)) if upsample != 1.0 else size


def raft_estimator(variant: str = "large", weights: str | Path | None = None, iterations: int = 12,
                   batch_size: int = 4, device: str | None = None, upsample: float = 1.0) -> RaftEstimator:
    """The ``raft`` flow method: trained RAFT weights (see :func:`raft_weights_path`) on ``device``."""
    return RaftEstimator(load_raft(variant, weights, device), iterations, batch_size, upsample)


__all__ = [
    "MIN_SIZE", "RAFT", "VARIANTS", "RaftEstimator", "convex_upsample", "correlation_pyramid",
    "default_weights_path", "detect_variant", "import_torchvision_raft", "load_raft", "lookup", "padding_for",
    "raft_estimator", "raft_from_state", "raft_weights_path", "read_raft_weights",
]
