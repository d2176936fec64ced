"""Temporal triplet-cosine frame selection (Stergiou 2021 §5.3.1, Eqs. 5.6-5.7, Fig. 5.4).

Halves the temporal extent of a volume by **selecting** frames, never blending them (the thesis' point:
temporal pooling fuses neighbouring frames into "afterimages"):

1. ``d_t = pool_s(x)[..., t]`` — each frame's spatially averaged C-vector;
2. ``s_t = cos(d_t, d_{t+1})`` for ``t = 0..T-2`` (Eq. 5.6);
3. the triplet score of frame t sums the similarities to both neighbours, ``P_t = s_{t-1} + s_t``; the end
   frames have one neighbour and count it twice (``P_0 = 2 s_0``, ``P_{T-1} = 2 s_{T-2}``);
4. keep the ``floor(T/2)`` frames with the **lowest** scores — the least redundant, "most informative"
   frames (Eq. 5.7) — ties to the lower index, returned in temporal order, per sample. ``T <= 1`` is the
   identity.

Scores are computed without gradient (the choice is discrete); the gradient flows through the kept frames.

Deviation from the author's public code (see docs/deviations.md, 'Triplet-cosine frame selection'): the code squares the
cosines, scores interior frames only and keeps the frames with the **highest** scores; this follows the
thesis text and Eq. 5.7 (lowest). Eq. 5.7's index ``P(θ_n, θ_{n+1})`` centres the triplet on ``n+1``;
the prose centres it on ``t`` (preceding and succeeding frame), which is used here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _frame_descriptors(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T, *spatial]`` or ``[B, C, T]`` -> ``[B, T, C]`` spatial means."""
    if x.ndim < 3:
        raise ValueError(f"frame selection: input of shape {tuple(x.shape)} must be [B, C, T, ...]")
    pooled = x.flatten(3).mean(dim=3) if x.ndim > 3 else x
    return pooled.transpose(1, 2)


def triplet_cosine_scores(x: torch.Tensor) -> torch.Tensor:
    """Triplet cosine score ``P_t`` of every frame, ``[B, C, T, H, W]`` (or ``[B, C, T]``) -> ``[B, T]``.

    ``T = 1`` gives zeros. Zero frame vectors have cosine 0 with everything (``F.cosine_similarity``'s eps).
    """
    frames = _frame_descriptors(x).float()
    batch, length, _ = frames.shape
    if length < 2:
        return frames.new_zeros(batch, length)
    pair = F.cosine_similarity(frames[:, :-1], frames[:, 1:], dim=-1)  # [B, T-1], s_t
    left = torch.cat([pair[:, :1], pair], dim=1)  # s_{t-1}, with s_0 standing in at t = 0
    right = torch.cat([pair, pair[:, -1:]], dim=1)  # s_t, with s_{T-2} standing in at t = T-1
    return left + right


def triplet_cosine_indices(x: torch.Tensor, keep: int | None = None) -> torch.Tensor:
    """Indices ``[B, keep]`` (ascending) of the ``keep`` lowest-scoring frames; ``keep`` defaults to ``T // 2``.

    ``T <= 1`` keeps every frame.
    """
    length = x.shape[2]
    if keep is None:
        keep = length // 2 if length > 1 else length
    if not 1 <= keep <= length:
        raise ValueError(f"frame selection: keep={keep} must be between 1 and T={length}")
    with torch.no_grad():
        scores = triplet_cosine_scores(x)
        order = torch.sort(scores, dim=1, stable=True).indices  # stable: ties -> lower index first
        return torch.sort(order[:, :keep], dim=1).values


def gather_frames(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``x [B, C, T, ...]``, ``indices [B, K]`` -> ``[B, C, K, ...]``: frame ``indices[b, k]`` of sample b."""
    shape = [indices.shape[0], 1, indices.shape[1]] + [1] * (x.ndim - 3)
    index = indices.to(x.device).view(shape).expand(x.shape[0], x.shape[1], indices.shape[1], *x.shape[3:])
    return torch.gather(x, 2, index)


def select_frames(x: torch.Tensor, keep: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``keep`` (default ``T // 2``) least redundant frames of ``x [B, C, T, H, W]`` (Eq. 5.7).

    Returns ``(frames [B, C, keep, H, W], indices [B, keep])``, indices ascending (temporal order).
    """
    if x.shape[2] <= 1:
        return x, torch.zeros(x.shape[0], x.shape[2], dtype=torch.long, device=x.device)
    indices = triplet_cosine_indices(x, keep)
    return gather_frames(x, indices), indices


triplet_cosine_select = select_frames


class TripletCosineSelect(nn.Module):
    """Module form of :func:`select_frames`; ``forward(x [B,C,T,H,W]) -> [B, C, T//2, H, W]``.

    The last selection is kept in ``last_indices`` ``[B, T//2]`` for inspection.
    """

    def __init__(self, keep: int | None = None):
        super().__init__()
        self.keep = keep
        self.last_indices: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, self.last_indices = select_frames(x, self.keep)
        return frames
