"""Where models run: one place turns ``--accelerator`` into a device, for every command.

``auto`` takes a CUDA GPU when PyTorch sees one, then Apple's MPS, then the CPU — unless the
``--accelerator`` option of a command (or ``$KINETOSCOPE_ACCELERATOR``) says otherwise; the option sets
the variable, so suites and their worker processes follow it too. Asking for a device
the machine does not have is a :class:`DeviceError` (the CLI prints it as one line, exit 2) instead of
a traceback from deep inside PyTorch or Lightning. Training hands the same accelerator name to
Lightning; evaluation, prediction and explanation move the model and every batch with
:func:`to_device`.
"""

from __future__ import annotations

import os
from typing import Any

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
ENV = "KINETOSCOPE_ACCELERATOR"  # what ``auto`` means in this process and its children (``--accelerator``)


class DeviceError(ValueError):
    """The requested accelerator is not available on this machine."""


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def lightning_accelerator(accelerator: str = "auto") -> str:
    """The accelerator name to hand to Lightning, checked: ``cpu``, ``gpu`` or ``mps``."""
    import torch

    if accelerator not in ACCELERATORS:
        raise DeviceError(f"accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if accelerator == "auto":
        accelerator = os.environ.get(ENV, "auto")
    if accelerator not in ACCELERATORS:
        raise DeviceError(f"${ENV}={accelerator!r} is not one of {', '.join(ACCELERATORS)}")
    if accelerator == "auto":
        if torch.cuda.is_available():
            return "gpu"
        return "mps" if _mps_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
            raise DeviceError(
                f"--accelerator {accelerator}: PyTorch sees no CUDA GPU on this machine (torch {torch.__version__}, "
                f"{build}); use --accelerator cpu or auto"
            )
        return "gpu"
    if accelerator == "mps" and not _mps_available():
        raise DeviceError("--accelerator mps: the MPS backend is not available here; use --accelerator cpu or auto")
    return accelerator


def use_accelerator(accelerator: str | None) -> None:
    """Make ``accelerator`` what ``auto`` means for this command (checked now, so a missing GPU is one
    clear error before any work starts)."""
    if accelerator is None:
        return
    lightning_accelerator(accelerator)
    os.environ[ENV] = accelerator


def resolve_device(accelerator: str = "auto", index: int = 0) -> Any:
    """The ``torch.device`` of ``accelerator`` (``index`` picks among several GPUs)."""
    import torch

    kind = lightning_accelerator(accelerator)
    if kind == "gpu":
        if index >= torch.cuda.device_count():
            raise DeviceError(f"GPU {index} requested; this machine has {torch.cuda.device_count()}")
        return torch.device("cuda", index)
    return torch.device(kind)


def to_device(batch: Any, device: Any) -> Any:
    """``batch`` (a tensor, or a dict/list/tuple holding tensors) with every tensor on ``device``;
    other values (video ids, subjects) are left as they are."""
    import torch

    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def model_device(model: Any) -> Any:
    """The device of a model's first parameter or buffer (CPU for a model with neither)."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")
