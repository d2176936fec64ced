"""Squeeze and Recursion (SR) and the cycle-consistency temporal gate (SRTG) — Stergiou 2021
§4.3 (Eqs. 4.1-4.7, Figs. 4.1-4.4) and §5.3.2 (GRU variant, Eqs. 5.8-5.11).

**Squeeze and Recursion.** The activations ``a [B, C, T, H, W]`` are averaged over space, ``pool_s(a)``,
giving T steps of C-vectors; a two-layer recurrent net with input = hidden = C runs over them and its hidden
states ``h [B, C, T]`` are broadcast back over space and multiplied in: ``a* = a ⊙ h`` (no extra sigmoid;
the thesis multiplies the hidden states in directly). Cells:

* ``"lstm"`` — Eqs. 4.1-4.5 (``nn.LSTM``; Eq. 4.5's ``a^[l-1]`` is a typo for ``a^[l]``; see
  docs/deviations.md, 'SRTG equations');
* ``"gru"`` — Eqs. 5.8-5.11 (MTNet). Eq. 5.10 applies the reset gate to ``h_{t-1}`` *before* the hidden
  matmul, ``h~ = tanh(W_h [r ⊙ h_{t-1}, x] + b)``; ``nn.GRU`` applies it after (``r ⊙ (W_hn h + b_hn)``).
  ``exact_gru=True`` (default) runs the thesis' cell (:class:`ExactGRU`, a Python loop over T);
  ``exact_gru=False`` uses ``nn.GRU`` as a fast path. Both have the same parameter shapes;
* ``"rnn"`` — tanh RNN (Table 5.7's ablation).

Parameters per SR (two layers, two bias vectors per layer as in PyTorch — the thesis' totals include
them): LSTM ``2(8C² + 8C)``, GRU ``2(6C² + 6C)``, RNN ``2(2C² + 2C)``.

**Cycle-consistency gate** (§4.3.2). Per sample, ``A = pool_s(a)`` and ``B = h`` (both T x C). The soft
nearest neighbour of ``A_t`` in B is ``B~_t = Σ_i α_i B_i``, ``α = softmax_i(-‖A_t - B_i‖² / τ)`` (Eq. 4.6;
the thesis has no temperature, ``τ = 1``), and ``j(t) = argmin_i ‖B~_t - B_i‖²`` (Eq. 4.7, which must index
``B_i``). A->B is consistent iff ``j(t) = t`` for every t; the same is done B->A; the pair is
cycle-consistent iff both are. Gate states (Fig. 4.4): **inactive** (``gate=False``: no check, always
``a ⊙ h`` — plain SR, what the author's released SRTG constructors build), **active-closed** (not
consistent: return ``a``) and **active-open** (consistent: ``a ⊙ h``). The decision is taken per sample
without gradient; the open mask of the last forward is kept in ``last_open`` ``[B]``.
"""

from __future__ import annotations

import torch
from torch import nn

CELLS = ("lstm", "gru", "rnn")


def spatial_pool(a: torch.Tensor) -> torch.Tensor:
    """``pool_s``: ``[B, C, T, H, W] -> [B, T, C]`` (mean over H, W; time-major for the recurrent nets)."""
    if a.ndim != 5:
        raise ValueError(f"expected activations [B, C, T, H, W], got shape {tuple(a.shape)}")
    return a.mean(dim=(3, 4)).transpose(1, 2)


class ExactGRU(nn.Module):
    """Multi-layer GRU with the thesis' candidate (Eq. 5.10): reset gate applied before the hidden matmul.

    ``z = σ(W_iz x + b_iz + W_hz h + b_hz)``, ``r = σ(W_ir x + b_ir + W_hr h + b_hr)`` (Eqs. 5.8-5.9),
    ``h~ = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)`` (5.10), ``h' = z ⊙ h + (1 - z) ⊙ h~`` (5.11).
    Parameter names, shapes, gate order (r, z, n) and initialisation follow ``nn.GRU``, so weights move
    between the two. ``forward(x [B, T, C_in]) -> [B, T, hidden]``, zero initial state.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2):
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        reference = nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        for name, param in reference.named_parameters():
            self.register_parameter(name, param)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden_size
        for layer in range(self.num_layers):
            w_ih = getattr(self, f"weight_ih_l{layer}")
            w_hh = getattr(self, f"weight_hh_l{layer}")
            b_ih = getattr(self, f"bias_ih_l{layer}")
            b_hh = getattr(self, f"bias_hh_l{layer}")
            inputs = torch.nn.functional.linear(x, w_ih, b_ih)  # all steps at once: [B, T, 3H]
            h = x.new_zeros(x.shape[0], hidden)
            outputs = []
            for t in range(x.shape[1]):
                x_r, x_z, x_n = inputs[:, t].split(hidden, dim=1)
                h_rz = torch.nn.functional.linear(h, w_hh[: 2 * hidden], b_hh[: 2 * hidden])
                r = torch.sigmoid(x_r + h_rz[:, :hidden])
                z = torch.sigmoid(x_z + h_rz[:, hidden:])
                n = torch.tanh(x_n + torch.nn.functional.linear(r * h, w_hh[2 * hidden :], b_hh[2 * hidden :]))
                h = z * h + (1 - z) * n
                outputs.append(h)
            x = torch.stack(outputs, dim=1)
        return x


class SqueezeRecursion(nn.Module):
    """SR: ``a [B, C, T, H, W] -> a ⊙ h`` with ``h`` the recurrent net's hidden states over ``pool_s(a)``."""

    def __init__(self, channels: int, cell: str = "lstm", num_layers: int = 2, exact_gru: bool = True):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"SqueezeRecursion: cell={cell!r}; expected one of {', '.join(CELLS)}")
        self.channels = channels
        self.cell = cell
        if cell == "lstm":
            self.recurrent: nn.Module = nn.LSTM(channels, channels, num_layers=num_layers, batch_first=True)
        elif cell == "gru" and exact_gru:
            self.recurrent = ExactGRU(channels, channels, num_layers=num_layers)
        elif cell == "gru":
            self.recurrent = nn.GRU(channels, channels, num_layers=num_layers, batch_first=True)
        else:
            self.recurrent = nn.RNN(channels, channels, num_layers=num_layers, batch_first=True)

    def hidden_states(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pool_s(a) [B, T, C] -> h [B, T, C]``."""
        out = self.recurrent(pooled)
        return out[0] if isinstance(out, tuple) else out

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = self.hidden_states(spatial_pool(a))
        return a * h.transpose(1, 2)[..., None, None].to(a.dtype)


def soft_nearest_cycle(source: torch.Tensor, target: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One direction of Eqs. 4.6-4.7: for each ``source_t`` the index ``j(t)`` of the target frame nearest
    to its soft nearest neighbour in ``target``. ``[B, T, C], [B, T, C] -> [B, T]`` (long)."""
    distances = torch.cdist(source, target).square()  # [B, T, T]: ‖A_t - B_i‖²
    alpha = torch.softmax(-distances / temperature, dim=-1)
    soft = alpha @ target  # B~_t
    return torch.cdist(soft, target).square().argmin(dim=-1)


class CycleConsistencyGate(nn.Module):
    """Cycle-consistency check between ``A`` and ``B`` (both ``[B, T, C]``) -> open mask ``[B]`` (bool)."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"CycleConsistencyGate: temperature={temperature} must be > 0")
        self.temperature = temperature

    @torch.no_grad()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.float(), b.float()
        steps = torch.arange(a.shape[1], device=a.device)
        a_to_b = (soft_nearest_cycle(a, b, self.temperature) == steps).all(dim=1)
        b_to_a = (soft_nearest_cycle(b, a, self.temperature) == steps).all(dim=1)
        return a_to_b & b_to_a


class SRTG(nn.Module):
    """Squeeze and Recursion Temporal Gate: SR whose fusion ``a ⊙ h`` is gated by cycle consistency.

    ``forward(a [B, C, T, H, W]) -> [B, C, T, H, W]``: per sample ``a ⊙ h`` if ``pool_s(a)`` and ``h`` are
    cycle-consistent (or ``gate=False``), else ``a``. ``last_open`` holds the last forward's mask ``[B]``.
    """

    def __init__(
        self,
        channels: int,
        cell: str = "lstm",
        gate: bool = True,
        temperature: float = 1.0,
        num_layers: int = 2,
        exact_gru: bool = True,
    ):
        super().__init__()
        self.sr = SqueezeRecursion(channels, cell, num_layers, exact_gru)
        self.gate = CycleConsistencyGate(temperature) if gate else None
        self.last_open: torch.Tensor | None = None

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        pooled = spatial_pool(a)
        h = self.sr.hidden_states(pooled)
        if self.gate is None:
            self.last_open = torch.ones(a.shape[0], dtype=torch.bool, device=a.device)
            return a * h.transpose(1, 2)[..., None, None].to(a.dtype)
        open_mask = self.gate(pooled, h)
        self.last_open = open_mask
        # where() keeps the graph (zero gradient to the recurrent net on closed samples).
        scale = torch.where(open_mask[:, None, None], h, torch.ones_like(h))
        return a * scale.transpose(1, 2)[..., None, None].to(a.dtype)
