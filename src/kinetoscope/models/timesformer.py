"""TimeSformer with divided space-time attention (Bertasius et al. 2021), as used in Broomé 2022 §5.3-5.4.

A clip ``[B, C, T, H, W]`` is cut into non-overlapping ``p x p`` patches per frame (``N = (H/p)(W/p)``
per frame), linearly embedded to ``D`` channels, and a learned classification token is prepended:
``[B, 1 + T*N, D]``. Each block applies, with pre-LayerNorm and residual connections,

1. **time attention** — every patch token attends to the tokens at the same spatial position in all
   frames (plus the classification token);
2. **space attention** — every patch token attends to the tokens of its own frame (plus the
   classification token);
3. a feed-forward layer.

The classification token attends to all tokens in both attentions; the head reads it after a final
LayerNorm.

Broomé 2022 trained the TimeSformer of the ``timesformer-pytorch`` package (the authors' code), and this
module follows that variant so the documents' parameter counts carry over: queries/keys/values without
bias, a GEGLU feed-forward of width ``4D``, no ``temporal_fc`` after time attention, and rotary position
embeddings (1-D over frames for time attention, axial 2-D over rows/columns for space attention) instead
of learned position embeddings — so no position parameters and any clip length works. Per block:
``20 D^2 + 17 D`` parameters when ``D = heads * head_dim``. ``position="learned"`` switches to Bertasius
et al.'s learned space and time embeddings (then ``frames`` and ``input_size`` are fixed).

Temporal Shape configuration (Broomé 2022 §5.3): one block per "layer", 3 blocks, ``D_h = h`` (the width knob
``hidden``), 8 heads, ``D = 8h``, patch 16, 64x64 grayscale, 20 frames —
``create_model("timesformer", 5, 1, hidden=h)``: 20,421 parameters at h = 2 and 8,968,709 at h = 48
("≈20k ... 9M"). Rotary embeddings need an even ``D_h`` (why Broomé 2022 §5.3 skipped h in {1, 3, 5}).
Diving48 e-h (Broomé 2022 §5.4): ``hidden=32, depth=11`` (D = 256) at 224², 32 frames, 48 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.registry import register_model


def rotary_angles(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Rotation angles ``[G, dim]`` for integer positions ``[G, A]`` on ``A`` axes (1: time, 2: rows/cols).

    Each axis gets the same number of channel pairs, ``floor(dim / (2A))``; pair ``i`` of an axis rotates
    by ``position * base^(-i / pairs)``. Channels left over (``dim`` not a multiple of ``2A``) get angle 0,
    i.e. are not rotated. Each angle is repeated for the two channels of its pair.
    """
    num_positions, axes = positions.shape
    pairs = dim // (2 * axes)
    angles = torch.zeros(num_positions, dim // 2, dtype=torch.float32, device=positions.device)
    if pairs > 0:
        inv_freq = base ** (-torch.arange(pairs, dtype=torch.float32, device=positions.device) / pairs)
        for axis in range(axes):
            angles[:, axis * pairs:(axis + 1) * pairs] = positions[:, axis : axis + 1].float() * inv_freq
    return angles.repeat_interleave(2, dim=1)


def apply_rotary(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x_2i, x_2i+1)`` of ``x [..., G, dim]`` by ``angles [G, dim]``."""
    rotated = torch.stack((-x[..., 1::2], x[..., 0::2]), dim=-1).flatten(-2)
    return x * angles.cos().to(x.dtype) + rotated * angles.sin().to(x.dtype)


class DividedAttention(nn.Module):
    """Multi-head attention of patch tokens within groups (same position across time, or same frame).

    Input ``[B, 1 + T*N, D]`` (token 0 = classification token, then frame-major patches); output the same
    shape. The classification token attends to every token; each patch token attends to its group and
    the classification token.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)
        self.proj_dropout = nn.Dropout(dropout)
        self.attention_dropout = attention_dropout

    def forward(self, x: torch.Tensor, axis: str, frames: int, angles: torch.Tensor | None) -> torch.Tensor:
        batch, length, _ = x.shape
        patches = (length - 1) // frames
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        p_drop = self.attention_dropout if self.training else 0.0
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v, dropout_p=p_drop)  # [B, h, 1, d]

        def group(t: torch.Tensor) -> torch.Tensor:  # [B, h, T*N, d] -> [B, h, G, n, d]
            t = t[:, :, 1:].reshape(batch, self.heads, frames, patches, self.head_dim)
            return t.transpose(2, 3) if axis == "time" else t

        qg, kg, vg = group(q), group(k), group(v)
        if angles is not None:
            qg, kg = apply_rotary(qg, angles), apply_rotary(kg, angles)
        groups = qg.shape[2]
        kg = torch.cat((k[:, :, None, :1].expand(-1, -1, groups, -1, -1), kg), dim=3)
        vg = torch.cat((v[:, :, None, :1].expand(-1, -1, groups, -1, -1), vg), dim=3)
        out = F.scaled_dot_product_attention(qg, kg, vg, dropout_p=p_drop)  # [B, h, G, n, d]
        if axis == "time":
            out = out.transpose(2, 3)
        out = torch.cat((cls_out, out.reshape(batch, self.heads, frames * patches, self.head_dim)), dim=2)
        out = out.transpose(1, 2).reshape(batch, length, self.heads * self.head_dim)
        return self.proj_dropout(self.proj(out))


class GEGLUFeedForward(nn.Module):
    """``Linear(D, 2*4D) -> a * GELU(gate) -> Linear(4D, D)``."""

    def __init__(self, dim: int, dropout: float, mult: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 2 * mult * dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(self.dropout(a * F.gelu(gate)))


class DividedSpaceTimeBlock(nn.Module):
    """Pre-norm residual block: time attention, space attention, feed-forward. ``[B, L, D] -> [B, L, D]``."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float, attention_dropout: float) -> None:
        super().__init__()
        self.norm_time = nn.LayerNorm(dim)
        self.time_attention = DividedAttention(dim, heads, head_dim, dropout, attention_dropout)
        self.norm_space = nn.LayerNorm(dim)
        self.space_attention = DividedAttention(dim, heads, head_dim, dropout, attention_dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = GEGLUFeedForward(dim, dropout)

    def forward(self, x: torch.Tensor, frames: int, time_angles: torch.Tensor | None,
                space_angles: torch.Tensor | None) -> torch.Tensor:
        x = x + self.time_attention(self.norm_time(x), "time", frames, time_angles)
        x = x + self.space_attention(self.norm_space(x), "space", frames, space_angles)
        return x + self.mlp(self.norm_mlp(x))


class TimeSformer(nn.Module):
    """Divided space-time TimeSformer: ``[B, C, T, H, W] -> [B, K]``.

    ``explain_layer`` is the last block; its output is tokens ``[B, 1 + T*N, D]``. ``token_grid``
    ``(T, H/p, W/p)`` (set by the last forward) and :meth:`tokens_to_volume` turn them into a feature
    volume ``[B, D, T, H/p, W/p]`` for Grad-CAM.
    """

    streams = ("rgb",)
    per_frame = False
    num_prefix_tokens = 1

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        hidden: int = 16,
        heads: int = 8,
        depth: int = 3,
        patch_size: int = 16,
        input_size: int = 64,
        frames: int = 20,
        dim: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        position: str = "rotary",
    ) -> None:
        super().__init__()
        if position not in ("rotary", "learned"):
            raise ValueError(f"timesformer: position={position!r}; accepted: 'rotary', 'learned'")
        if position == "rotary" and hidden % 2:
            raise ValueError(
                f"timesformer: hidden (per-head dim D_h) = {hidden} must be even for rotary position "
                "embeddings (Broomé 2022 §5.3 skipped h in {1, 3, 5}); use an even value or position='learned'"
            )
        if input_size % patch_size:
            raise ValueError(
                f"timesformer: input_size={input_size} is not a multiple of patch_size={patch_size}"
            )
        self.dim = dim or heads * hidden
        self.heads, self.head_dim, self.patch_size, self.position = heads, hidden, patch_size, position
        side = input_size // patch_size
        self.token_grid = (frames, side, side)
        self.patch_embed = nn.Conv3d(in_channels, self.dim, (1, patch_size, patch_size),
                                     stride=(1, patch_size, patch_size))
        self.cls_token = nn.Parameter(torch.randn(1, 1, self.dim) * 0.02)
        if position == "learned":
            self.space_embed = nn.Parameter(torch.randn(1, 1 + side * side, self.dim) * 0.02)
            self.time_embed = nn.Parameter(torch.zeros(1, frames, self.dim))
        self.blocks = nn.ModuleList(
            DividedSpaceTimeBlock(self.dim, heads, hidden, dropout, attention_dropout) for _ in range(depth)
        )
        self.explain_layer = f"blocks.{depth - 1}"
        self.norm = nn.LayerNorm(self.dim)
        self.head = nn.Linear(self.dim, num_classes)

    def _angles(self, frames: int, rows: int, cols: int, device: torch.device):
        if self.position != "rotary":
            return None, None
        time = rotary_angles(torch.arange(frames, device=device)[:, None], self.head_dim)
        grid = torch.stack(torch.meshgrid(torch.arange(rows, device=device), torch.arange(cols, device=device),
                                          indexing="ij"), dim=-1).reshape(-1, 2)
        return time, rotary_angles(grid, self.head_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, T, H, W] -> [B, 1 + T*N, D]`` tokens (classification token first)."""
        x = self.patch_embed(x)  # [B, D, T, H/p, W/p]
        batch, _, frames, rows, cols = x.shape
        self.token_grid = (frames, rows, cols)
        x = x.flatten(2).transpose(1, 2)  # [B, T*N, D], frame-major
        cls = self.cls_token.expand(batch, -1, -1)
        if self.position == "learned":
            if (frames, rows * cols) != (self.time_embed.shape[1], self.space_embed.shape[1] - 1):
                raise ValueError(
                    f"timesformer: learned position embeddings were built for {self.time_embed.shape[1]} "
                    f"frames and {self.space_embed.shape[1] - 1} patches; got {frames} frames and "
                    f"{rows * cols} patches"
                )
            x = x.reshape(batch, frames, rows * cols, self.dim) + self.space_embed[:, None, 1:]
            x = (x + self.time_embed[:, :, None]).reshape(batch, frames * rows * cols, self.dim)
            cls = cls + self.space_embed[:, :1]
        return torch.cat((cls, x), dim=1)

    def tokens_to_volume(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens ``[B, 1 + T*N, D]`` -> ``[B, D, T, H/p, W/p]`` (drops the classification token)."""
        frames, rows, cols = self.token_grid
        return tokens[:, self.num_prefix_tokens:].transpose(1, 2).reshape(
            tokens.shape[0], tokens.shape[2], frames, rows, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        frames, rows, cols = self.token_grid
        time_angles, space_angles = self._angles(frames, rows, cols, x.device)
        for block in self.blocks:
            x = block(x, frames, time_angles, space_angles)
        return self.head(self.norm(x[:, 0]))


@register_model("timesformer")
def timesformer(num_classes: int, in_channels: int = 1, hidden: int = 16, heads: int = 8, depth: int = 3,
                patch_size: int = 16, input_size: int = 64, frames: int = 20, dim: int | None = None,
                dropout: float = 0.0, attention_dropout: float = 0.0, position: str = "rotary") -> TimeSformer:
    """Divided space-time TimeSformer; defaults = Broomé 2022's Temporal Shape model at h = 16 (Broomé 2022 §5.3).

    ``hidden`` is the per-head dim ``D_h``; ``dim`` (default ``heads * hidden``) the token width ``D``.
    """
    return TimeSformer(num_classes, in_channels, hidden, heads, depth, patch_size, input_size, frames, dim,
                       dropout, attention_dropout, position)


__all__ = ["TimeSformer", "DividedAttention", "DividedSpaceTimeBlock", "rotary_angles", "apply_rotary"]
