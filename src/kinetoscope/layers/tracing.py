"""Whether a graph is being recorded (TorchScript tracing, ``torch.export``, ONNX export).

Layers whose fast path is an autograd Function or a C kernel (the fused ConvLSTM, tiled SoftPool)
switch to plain PyTorch operations computing the same function while a graph is recorded, since
no graph format can hold those (``kinetoscope export``, docs/export.md).
"""

from __future__ import annotations

import torch


def recording_graph() -> bool:
    """True while TorchScript traces or ``torch.export`` / ONNX export capture a graph."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export())
