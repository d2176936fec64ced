"""Reading and writing state dicts safely: checkpoints without unpickling code, strict safetensors.

Shared by the model importers (``kinetoscope.models.weights``) and the RAFT flow importer
(``kinetoscope.flow.raft``); it sits beside ``utils`` so both may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from kinetoscope.utils import atomic_path

MAX_LISTED = 12  # keys listed per category in a mismatch diff


class WeightMismatchError(ValueError):
    """A state dict does not fit a model; the message lists missing, unexpected and mis-shaped keys."""

    def __init__(
        self,
        what: str,
        missing: list[str],
        unexpected: list[str],
        shape_mismatches: list[str],
        duplicates: list[str] | None = None,
    ):
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatches = shape_mismatches
        self.duplicates = duplicates or []
        lines = [what]
        for title, items in (
            ("missing from the checkpoint", missing),
            ("unexpected in the checkpoint", unexpected),
            ("shape mismatches", shape_mismatches),
            ("several checkpoint keys map to one model key", self.duplicates),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines.extend(f"    {item}" for item in items[:MAX_LISTED])
                if len(items) > MAX_LISTED:
                    lines.append(f"    ... and {len(items) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


# ---------------------------------------------------------------------------------------------------
# Reading checkpoints


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth``/``.pyth``/``.ckpt`` file, loaded with ``weights_only=True``.

    Accepts a raw state dict or a dict holding one under ``"state_dict"`` (Lightning, many repositories)
    or ``"model_state"`` (PySlowFast / PyTorchVideo); strips a ``"module."`` prefix (DataParallel/DDP).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, refused globals: all mean "not loadable safely"
        raise ValueError(
            f"{path} cannot be read as a PyTorch checkpoint with weights_only=True (tensors and plain "
            f"containers only): {exc}"
        ) from exc
    if isinstance(obj, dict):
        for container in ("state_dict", "model_state"):
            if isinstance(obj.get(container), dict):
                obj = obj[container]
                break
    if not isinstance(obj, dict) or not obj:
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a state dict; expected a dict of tensors or a dict "
            f"with a 'state_dict' or 'model_state' entry"
        )
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise ValueError(
            f"{path}: entries {non_tensors[:MAX_LISTED]} are not tensors; expected a state dict of tensors"
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


# ---------------------------------------------------------------------------------------------------
# Comparing


def compare_state(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    describe: Callable[[str], str] = str,
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``expected``, as text lines."""
    missing = [describe(k) for k in expected if k not in state]
    unexpected = [describe(k) for k in state if k not in expected]
    shapes = [
        f"{describe(k)}: {list(state[k].shape)} in the checkpoint, model expects {list(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    return missing, unexpected, shapes


# ---------------------------------------------------------------------------------------------------
# safetensors


def save_safetensors(
    model: nn.Module | Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write a model's state dict (or a state dict) to ``path`` as safetensors, atomically."""
    from safetensors.torch import save_file

    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    return path


def load_safetensors(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` strictly: names and shapes must match, else ``WeightMismatchError``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = load_file(str(path))
    expected = model.state_dict()
    missing, unexpected, shapes = compare_state(state, expected, repr)
    if missing or unexpected or shapes:
        raise WeightMismatchError(
            f"{path} does not fit {type(model).__name__} ({len(state)} tensors in the file, "
            f"{len(expected)} in the model):",
            missing,
            unexpected,
            shapes,
        )
    model.load_state_dict(state, strict=True)
    return model
