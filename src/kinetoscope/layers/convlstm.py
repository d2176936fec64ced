"""Convolutional LSTM (Broomé 2022 §4, Eq. 4.5-4.10; Mänttäri 2020 §4.2).

    f, i, o = sigmoid(W * X_t + U * H_{t-1} + b)
    S_t     = f o S_{t-1} + i o tanh(W_c * X_t + U_c * H_{t-1} + b_c)
    H_t     = o o tanh(S_t)

no peepholes, zero initial states, 'same' padding. The candidate uses tanh (see docs/deviations.md,
'ConvLSTM candidate activation').
Biases: the input convolution always has one per gate; ``hidden_bias=True`` gives the hidden
convolution its own too (the PyTorch layout of the Temporal Shape code, whose parameter counts
571 ... 433,253 need it); ``hidden_bias=False`` is the Keras layout of the pain models (731,522).

Speed (``benchmarks/convlstm.py`` measures every choice below against the straightforward cell;
the figures and the alternatives not kept are in docs/performance.md). The layer computes the same function as
:class:`ConvLSTMCell` stepped
over time (``reference_convlstm`` proves it in the tests) but

* runs the whole recurrence as one ``torch.autograd.Function`` (:class:`_ConvLSTMSequence`) with
  a hand-written backward: no autograd graph of ~15 nodes per step, no ``x[:, :, t]`` slicing under
  autograd (its backward would zero-fill a full copy of x per step), no
  ``torch.stack`` (hidden states go straight into one preallocated output) and no copy of the
  input (step t's slice is written straight into the convolution's input buffer);
* keeps the cell's single convolution over ``cat([x_t, H_{t-1}])`` (weights
  ``cat([input_conv.weight, hidden_conv.weight])``, biases summed; two separate convolutions were
  slower on CPU) but runs it channels-last, 1.3-2x faster for these narrow layers (17 or 32 input
  channels);
* runs the cell's pointwise arithmetic in one fused C kernel per step and direction
  (:mod:`kinetoscope.layers.native`, compiled once per machine): it reads the convolution's
  channels-last gates where they are, writes H_t both to the output and into the next step's
  convolution input, and in backward reads dL/dH_t from the convolution's gradient in place. Where
  no C compiler exists (or ``native=False``) the same steps run as PyTorch operations: in-place gate
  nonlinearities and the fused ``sigmoid_backward`` / ``tanh_backward`` kernels;
* when x needs no gradient (the first block), backward asks the convolution for the data gradient of
  the H_{t-1} channels only: mkldnn pads 17 input channels to 32, so the full data gradient costs
  1.6x as much;
* does not hoist the input convolution of all steps into one call (stride 1): on glibc malloc the
  ``[B*T, 4h, H, W]`` buffer (335 MB at 64x64, B=16, h=16) is page-faulted afresh every step of
  training, which cost more than the batching saved. Stride > 1 must hoist it (the state lives at
  the strided resolution), where the buffer is stride^2 smaller.

"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.func import functional_call

from kinetoscope.layers.native import cell_kernel
from kinetoscope.layers.tracing import recording_graph


class ConvLSTMCell(nn.Module):
    """The straightforward cell: one Conv2d over ``cat([x_t, h_{t-1}])`` per step.

    Gate order in the 4·hidden output channels: input, forget, candidate, output.
    ``x`` is ``[B, C, H, W]``, the state ``(h, c)`` two ``[B, hidden, H, W]``. Stride 1 only (the
    input and the hidden state must share a resolution); :class:`ConvLSTM` handles stride > 1.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        if stride != 1:
            raise ValueError(
                f"ConvLSTMCell: stride={stride} is not supported (cat([x, h]) needs x and h at one "
                "resolution); use ConvLSTM(..., stride=s), which strides the input convolution only"
            )
        self.hidden_channels = hidden_channels
        self.stride = stride
        self.conv = nn.Conv2d(
            in_channels + hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2
        )

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        gates = self.conv(torch.cat([x, h], dim=1))
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _cell_backward(act: torch.Tensor, tanh_c: torch.Tensor, c_prev: torch.Tensor | None,
                   dh: torch.Tensor, grad_c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Backward of one cell step: activated gates ``[B, 4h, H, W]``, tanh(S_t), S_{t-1}, dL/dH_t and
    dL/dS_t from step t+1 (``None``: zero) -> dL/d(pre-activation gates) in channels-last (as the
    convolution's backward wants it), dL/dS_{t-1}."""
    i, f, g, o = act.chunk(4, dim=1)
    sigmoid_backward = torch.ops.aten.sigmoid_backward.grad_input  # grad * s (1 - s), one pass
    tanh_backward = torch.ops.aten.tanh_backward.grad_input  # grad * (1 - t^2), one pass
    # dS_t = dL/dS_t (recurrent) + dH_t o (1 - tanh(S_t)^2)
    dc = tanh_backward(dh * o, tanh_c, grad_input=torch.empty_like(tanh_c))
    if grad_c is not None:
        dc.add_(grad_c)
    grad_gates = torch.empty_like(act, memory_format=torch.channels_last)
    di, df, dg, do = grad_gates.chunk(4, dim=1)
    sigmoid_backward(dh * tanh_c, o, grad_input=do)
    sigmoid_backward(dc * g, i, grad_input=di)
    tanh_backward(dc * i, g, grad_input=dg)
    if c_prev is None:  # S_{-1} = 0
        df.zero_()
        return grad_gates, None
    sigmoid_backward(dc * c_prev, f, grad_input=df)
    return grad_gates, dc.mul_(f)


def _torch_cell_forward(gates: torch.Tensor, c_prev: torch.Tensor | None, out: torch.Tensor):
    """The cell with PyTorch operations: pre-activation gates ``[B, 4h, H, W]`` (activated in place),
    S_{t-1} (``None``: zero) -> (activated gates, S_t, tanh(S_t)); H_t is written to ``out``."""
    hidden = gates.shape[1] // 4
    gates[:, : 2 * hidden].sigmoid_()
    gates[:, 2 * hidden : 3 * hidden].tanh_()
    gates[:, 3 * hidden :].sigmoid_()
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.mul(i, g) if c_prev is None else torch.addcmul(f * c_prev, i, g)  # S_{-1} = 0
    tanh_c = torch.tanh(c)
    torch.mul(o, tanh_c, out=out)
    return gates, c, tanh_c


class _ConvLSTMSequence(torch.autograd.Function):
    """The recurrence over T steps as one autograd node (fused cell, hand-written backward).

    Step t convolves ``cat([inputs[:, :, t], H_{t-1}])`` with one weight (the baseline cell's single
    convolution; ``inputs`` may have 0 channels) in channels-last, adds ``added_gates[:, t]`` if
    given (the strided input convolution, precomputed for all steps) and applies the cell: the fused
    kernel of :mod:`kinetoscope.layers.native` when it is available (``native=True``), else PyTorch
    operations (:func:`_torch_cell_forward`, :func:`_cell_backward`).

    Forward: ``inputs [B, C, T, H, W]`` (any strides), ``weight [4h, C + h, k, k]``,
    ``bias [4h] | None``, ``added_gates [B, T, 4h, H, W] | None`` -> hidden states
    ``[B, T, H, W, h]`` (contiguous). With ``keep_for_backward`` it keeps, per step, the
    convolution's input, the activated gates, the cell state and its tanh.
    """

    @staticmethod
    def forward(ctx, inputs, weight, bias, added_gates, keep_for_backward: bool, native: bool):
        batch, in_channels, steps, hh, ww = inputs.shape
        hidden, padding = weight.shape[0] // 4, weight.shape[-1] // 2
        kernel = cell_kernel(inputs.dtype, inputs.device) if native else None
        weight = weight.contiguous(memory_format=torch.channels_last)
        # [B, T, h, H, W] over NHWC memory: per-frame consumers (pooling, BatchNorm) get channels-last.
        # The Function returns the base buffer (a view made in here could not be modified in place).
        buffer = inputs.new_empty(batch, steps, hh, ww, hidden)
        hiddens = buffer.permute(0, 1, 4, 2, 3)

        def conv_input(step: int) -> torch.Tensor:  # cat([x_t, .]) with H_{t-1} still to be written
            stacked = torch.empty(batch, in_channels + hidden, hh, ww, dtype=inputs.dtype, device=inputs.device,
                                  memory_format=torch.channels_last)
            stacked[:, :in_channels] = inputs[:, :, step]
            return stacked

        stacked = conv_input(0)
        stacked[:, in_channels:] = 0  # H_{-1} = 0
        c = None
        ctx.step_inputs, ctx.activated, ctx.cells, ctx.tanh_cells = [], [], [], []
        for step in range(steps):
            gates = torch.conv2d(stacked, weight, bias, 1, padding)
            if added_gates is not None:
                gates.add_(added_gates[:, step])
            following = conv_input(step + 1) if step + 1 < steps else None
            if kernel is not None:  # one pass: gates in place, S_t, tanh(S_t), H_t into both destinations
                gates = gates.contiguous(memory_format=torch.channels_last)
                c_new = torch.empty_like(gates[:, :hidden], memory_format=torch.channels_last)
                tanh_c = torch.empty_like(c_new)
                h_next = following[:, in_channels:] if following is not None else None
                kernel.forward(gates, c, c_new, tanh_c, hiddens[:, step], h_next)
                c = c_new
            else:
                gates, c, tanh_c = _torch_cell_forward(gates.contiguous(), c, out=hiddens[:, step])
                if following is not None:
                    following[:, in_channels:] = hiddens[:, step]
            if keep_for_backward:
                ctx.step_inputs.append(stacked)
                ctx.activated.append(gates)
                ctx.cells.append(c)
                ctx.tanh_cells.append(tanh_c)
            stacked = following
        ctx.save_for_backward(weight)
        ctx.kernel, ctx.has_bias, ctx.input_shape = kernel, bias is not None, inputs.shape
        return buffer

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_buffer):
        grad_hiddens = grad_buffer.permute(0, 1, 4, 2, 3)  # [B, T, H, W, h] -> [B, T, h, H, W]
        (weight,) = ctx.saved_tensors
        kernel = ctx.kernel
        batch, in_channels, steps, _, _ = ctx.input_shape
        padding = weight.shape[-1] // 2
        need_inputs, need_weight, _, need_added, _, _ = ctx.needs_input_grad
        grad_inputs = grad_hiddens.new_empty(ctx.input_shape) if need_inputs else None
        grad_added = None
        if need_added:
            grad_added = grad_hiddens.new_empty(batch, steps, weight.shape[0], *grad_hiddens.shape[3:])
        grad_weight = torch.zeros_like(weight)
        grad_bias = weight.new_zeros(weight.shape[0]) if ctx.has_bias else None
        split = not need_inputs and in_channels > 0  # no gradient for x: H_{t-1}'s data gradient alone
        hidden_weight = weight[:, in_channels:].contiguous(memory_format=torch.channels_last) if split else None
        grad_weight_step = grad_bias_step = None

        def conv_backward(grad_output, conv_input, conv_weight, output_mask):
            return torch.ops.aten.convolution_backward(
                grad_output, conv_input, conv_weight, [weight.shape[0]], [1, 1], [padding, padding], [1, 1], False,
                [0, 0], 1, output_mask,
            )

        grad_h = grad_c = None  # dL/dH_t, dL/dS_t arriving through the recurrence
        for step in range(steps - 1, -1, -1):
            c_prev = ctx.cells[step - 1] if step > 0 else None
            if kernel is not None:
                act, tanh_c = ctx.activated[step], ctx.tanh_cells[step]
                grad_gates = torch.empty_like(act, memory_format=torch.channels_last)
                grad_c_prev = None
                if step > 0:
                    grad_c_prev = grad_c if grad_c is not None else torch.empty_like(tanh_c)
                kernel.backward(act, tanh_c, c_prev, grad_hiddens[:, step], grad_h, grad_c, grad_c_prev, grad_gates)
                grad_c = grad_c_prev
            else:
                dh = grad_hiddens[:, step] if grad_h is None else grad_h.contiguous().add_(grad_hiddens[:, step])
                grad_gates, grad_c = _cell_backward(ctx.activated[step], ctx.tanh_cells[step], c_prev, dh, grad_c)
            stacked = ctx.step_inputs[step]
            if not split:
                grad_stacked, grad_weight_step, grad_bias_step = conv_backward(
                    grad_gates, stacked, weight, [step > 0 or need_inputs, need_weight, grad_bias is not None]
                )
                grad_h = grad_stacked[:, in_channels:] if step > 0 else None
            else:  # mkldnn pads 17 input channels to 32: the full data gradient would cost 1.6x as much
                if need_weight or grad_bias is not None:
                    _, grad_weight_step, grad_bias_step = conv_backward(
                        grad_gates, stacked, weight, [False, need_weight, grad_bias is not None]
                    )
                grad_h = None
                if step > 0:
                    grad_h = conv_backward(grad_gates, stacked[:, in_channels:], hidden_weight, [True, False, False])[0]
            if need_weight:
                grad_weight.add_(grad_weight_step)
            if grad_bias is not None:
                grad_bias.add_(grad_bias_step)
            if need_added:
                grad_added[:, step] = grad_gates
            if need_inputs:
                grad_inputs[:, :, step] = grad_stacked[:, :in_channels]
        return grad_inputs, grad_weight.contiguous(), grad_bias, grad_added, None, None


class ConvLSTM(nn.Module):
    """A ConvLSTM layer over a whole sequence.

    Input ``[B, C, T, H, W]``; output the hidden states of every step ``[B, hidden, T, H', W']``
    (H' = ceil(H / stride)), returned as a view of a ``[B, T, H', W', hidden]`` buffer: it is
    ``channels_last_3d``, and per-frame consumers (``x.transpose(1, 2).reshape(B * T, ...)``) get a
    channels-last ``[B*T, hidden, H', W']`` view without a copy, where PyTorch's pooling and
    BatchNorm kernels are 2x faster than on NCHW (it is not contiguous: use ``reshape``, not
    ``view``). ``stride`` > 1 subsamples the input spatially in the input convolution (the C-LSTM of
    Mänttäri 2020 uses stride 2); the hidden state lives at the strided resolution.

    ``native`` (default ``True``) runs the cell's pointwise arithmetic in the fused kernel of
    :mod:`kinetoscope.layers.native` when it can be built (float32/float64 on CPU); ``False``, or no
    C compiler, keeps it in PyTorch operations. Both compute the same function (tested).
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        hidden_bias: bool = True,
        native: bool = True,
    ):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvLSTM: kernel_size={kernel_size}; 'same' padding needs an odd size")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.native = native
        pad = kernel_size // 2
        self.input_conv = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, stride=stride, padding=pad)
        self.hidden_conv = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=pad, bias=hidden_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, T, H, W]`` -> hidden states ``[B, hidden, T, H', W']``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"ConvLSTM: expected input [B, {self.in_channels}, T, H, W], got {tuple(x.shape)}"
            )
        if recording_graph():  # an exported graph cannot hold the autograd Function or the C kernel
            return self.forward_stepwise(x)
        b, c, t, h, w = x.shape
        weight, bias = self.hidden_conv.weight, self.input_conv.bias
        if self.hidden_conv.bias is not None:
            bias = bias + self.hidden_conv.bias
        # without autograd (inference) the per-step tensors are dropped as soon as they are used
        keep = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.stride == 1:  # one convolution over cat([x_t, H_{t-1}]) per step, as the baseline cell
            weight = torch.cat([self.input_conv.weight, weight], dim=1)
            hiddens = _ConvLSTMSequence.apply(x, weight, bias, None, keep, self.native)
        else:  # strided input convolution for all steps at once; the state lives at H / stride
            frames = x.transpose(1, 2).reshape(b * t, c, h, w)
            x_gates = torch.conv2d(frames, self.input_conv.weight, None, self.stride, self.kernel_size // 2)
            x_gates = x_gates.view(b, t, *x_gates.shape[1:])
            no_inputs = x.new_empty(b, 0, t, *x_gates.shape[3:])
            hiddens = _ConvLSTMSequence.apply(no_inputs, weight, bias, x_gates, keep, self.native)
        return hiddens.permute(0, 4, 1, 2, 3)  # [B, T, H, W, h] -> [B, h, T, H, W]

    def forward_stepwise(self, x: torch.Tensor) -> torch.Tensor:
        """The same function as :meth:`forward` in plain out-of-place PyTorch operations, one step at a
        time: what TorchScript tracing, ``torch.export`` and ONNX export record (``forward`` switches
        to it while they trace). ``x [B, C, T, H, W]`` -> ``[B, hidden, T, H', W']``."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        x_gates = self.input_conv(frames)  # strided input convolution with its bias, all steps at once
        x_gates = x_gates.view(b, t, *x_gates.shape[1:])
        hidden = x.new_zeros(b, self.hidden_channels, *x_gates.shape[3:])
        cell = torch.zeros_like(hidden)
        outputs = []
        for step in range(t):
            i, f, g, o = (x_gates[:, step] + self.hidden_conv(hidden)).chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            hidden = torch.sigmoid(o) * torch.tanh(cell)
            outputs.append(hidden)
        return torch.stack(outputs, dim=2)



def reference_convlstm(layer: ConvLSTM, x: torch.Tensor) -> torch.Tensor:
    """The baseline: ``layer``'s weights stepped through the straightforward :class:`ConvLSTMCell`.

    The cell's single convolution gets ``cat([input_conv.weight, hidden_conv.weight], dim=1)`` and
    the sum of both biases, so outputs and gradients (w.r.t. ``x`` and ``layer``'s parameters) are
    those of the cell applied step by step with ``x[:, :, t]``. Stride 1 only. For tests and
    ``benchmarks/convlstm.py``; ``x [B, C, T, H, W]`` -> ``[B, hidden, T, H, W]``.
    """
    if layer.stride != 1:
        raise ValueError(f"reference_convlstm: layer.stride={layer.stride}; the cell supports stride 1 only")
    cell = ConvLSTMCell(layer.in_channels, layer.hidden_channels, layer.kernel_size).to(x)
    weight = torch.cat([layer.input_conv.weight, layer.hidden_conv.weight], dim=1)
    bias = layer.input_conv.bias
    if layer.hidden_conv.bias is not None:
        bias = bias + layer.hidden_conv.bias
    b, _, t, hh, ww = x.shape
    h = x.new_zeros(b, layer.hidden_channels, hh, ww)
    c = torch.zeros_like(h)
    outputs = []
    for step in range(t):
        h, c = functional_call(cell, {"conv.weight": weight, "conv.bias": bias}, (x[:, :, step], (h, c)))
        outputs.append(h)
    return torch.stack(outputs, dim=2)
