"""Convolutional LSTM (seed 000 [T] §4, Eq. 4.5-4.10; seed 001 [P] §4.2).

    f, i, o = sigmoid(W * X_t + U * H_{t-1} + b)
    S_t     = f o S_{t-1} + i o tanh(W_c * X_t + U_c * H_{t-1} + b_c)
    H_t     = o o tanh(S_t)

no peepholes, zero initial states, 'same' padding. The candidate uses tanh (spec ambiguity 12).
Biases: the input convolution always has one per gate; ``hidden_bias=True`` gives the hidden
convolution its own too (the PyTorch layout of the Temporal Shape code, whose parameter counts
571 ... 433,253 need it); ``hidden_bias=False`` is the Keras layout of the pain models (731,522).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvLSTMCell(nn.Module):
    """The straightforward cell: one Conv2d over ``cat([x_t, h_{t-1}])`` per step.

    Gate order in the 4·hidden output channels: input, forget, candidate, output.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.stride = stride
        self.conv = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]):
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """A ConvLSTM layer over a whole sequence.

    Input ``[B, C, T, H, W]``; output the hidden states of every step ``[B, hidden, T, H', W']``
    (H' = ceil(H / stride)). ``stride`` > 1 subsamples the input spatially before the input
    convolution (the C-LSTM of seed 001 uses stride 2).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        hidden_bias: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.stride = stride
        pad = kernel_size // 2
        self.input_conv = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, stride=stride, padding=pad)
        self.hidden_conv = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=hidden_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, _, _ = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, *x.shape[1:2], *x.shape[3:])
        x_gates = self.input_conv(frames)
        hh, ww = x_gates.shape[-2:]
        x_gates = x_gates.reshape(b, t, 4 * self.hidden_channels, hh, ww)
        h = x.new_zeros(b, self.hidden_channels, hh, ww)
        c = torch.zeros_like(h)
        outputs = []
        for step in range(t):
            gates = x_gates[:, step] + self.hidden_conv(h)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=2)
