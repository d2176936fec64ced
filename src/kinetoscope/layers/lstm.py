"""A fully connected LSTM with one bias per gate, as in Keras (Broomé 2022 §3.2, the VGG+LSTM baseline).

``torch.nn.LSTM`` keeps two bias vectors per gate (``b_ih`` and ``b_hh``, 8·hidden numbers); Keras's
``LSTM`` layer — which the VGG+LSTM of Broomé 2022 Table 3.4 was counted with — keeps one (4·hidden).
The two are the same function (the biases only ever appear summed), so this layer is ``nn.LSTM``'s
recurrence with the bias held once:

    i, f, g, o = split(x_t W + b + h_{t-1} U)          (gate order i, f, g, o as in torch)
    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g),   h_t = σ(o) ⊙ tanh(c_t)

Parameters ``4·hidden·(input + hidden + 1)``. The input projection of all steps is one matrix product;
only the recurrence loops over time.
"""

from __future__ import annotations

import torch
from torch import nn


class LSTM(nn.Module):
    """``forward(x [B, T, input_size]) -> h [B, T, hidden_size]`` (every step's hidden state; zero
    initial state). ``input_proj`` holds ``W`` and the bias, ``recurrent`` holds ``U`` (no bias)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.input_proj = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        nn.init.xavier_uniform_(self.input_proj.weight)  # Keras: glorot_uniform kernel,
        nn.init.orthogonal_(self.recurrent.weight)  # orthogonal recurrent kernel,
        with torch.no_grad():  # zero bias with the forget gate's set to 1 (unit_forget_bias)
            self.input_proj.bias.zero_()
            self.input_proj.bias[hidden_size : 2 * hidden_size] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTM: expected input [B, T, {self.input_size}], got {tuple(x.shape)}")
        b, t, _ = x.shape
        gates_x = self.input_proj(x)  # [B, T, 4h]
        h = x.new_zeros(b, self.hidden_size)
        c = x.new_zeros(b, self.hidden_size)
        outputs = []
        for step in range(t):
            i, f, g, o = (gates_x[:, step] + self.recurrent(h)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"
