"""Reading and writing state dicts safely: checkpoints without unpickling code, strict safetensors.

Shared by the model importers (``kinetoscope.models.weights``) and the RAFT flow importer
(``kinetoscope.flow.raft``); it sits beside ``utils`` so both may import it.
"""

from __future__ import annotations

import errno
import hashlib
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinetoscope.utils import atomic_path, atomic_write_text, sha256_file

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


class DamagedFileError(ValueError):
    """A weights or checkpoint file that is truncated, overwritten or replaced: its bytes do not match the
    recorded sha256, or they do not parse. The message names the file and what to do."""


class UnsafeCheckpointError(ValueError):
    """A checkpoint that holds pickled Python objects beyond tensors and plain containers."""


SHA256_SUFFIX = ".sha256"  # ``<weights>.safetensors.sha256`` beside an imported file, ``sha256sum -c`` format


def load_torch_file(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors of our own: a file holding pickled objects
    other than tensors and plain containers raises ``UnsafeCheckpointError`` (it is never unpickled);
    a truncated or overwritten file raises ``DamagedFileError``. Both name the file."""
    import pickle

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        culprit = f" ({found.group(1)})" if found else ""
        raise UnsafeCheckpointError(
            f"{path} holds pickled Python objects{culprit}, not only tensors; kinetoscope does not unpickle "
            f"them, as that can run code: save a plain state dict or .safetensors file instead"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno not in (None, errno.EINVAL):  # EINVAL: a truncated zip
            raise  # disk and permission errors: as they are
        reason = str(exc).split(". ")[0]
        raise DamagedFileError(f"{path} is damaged ({reason}); {_remedy(path)}") from None


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pt``/``.pth``/``.pyth``/``.ckpt`` file, loaded with ``weights_only=True``.

    Accepts a raw state dict or a dict holding one under ``"state_dict"`` (Lightning, many repositories)
    or ``"model_state"`` (PySlowFast / PyTorchVideo); strips a ``"module."`` prefix (DataParallel/DDP).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = load_torch_file(path)
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
    model: nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    metadata: Mapping[str, str] | None = None,
    checksum_file: bool = False,
) -> Path:
    """Write a model's state dict (or a state dict) to ``path`` as safetensors, atomically and durably
    (fsync before the rename). ``checksum_file`` also writes ``<path>.sha256`` (``sha256sum`` format),
    which ``load_safetensors`` then checks."""
    from safetensors.torch import save

    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    # serialised in memory and written by Python, so a full disk is an OSError naming the file
    # (safetensors' own writer raises a SafetensorError instead)
    data = save(tensors, metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    path = Path(path)
    with atomic_path(path, durable=True) as tmp:
        tmp.write_bytes(data)
    if checksum_file:
        digest = hashlib.sha256(data).hexdigest()
        atomic_write_text(path.with_name(path.name + SHA256_SUFFIX), f"{digest}  {path.name}\n")
    return path


def recorded_sha256(path: str | Path) -> tuple[str | None, str]:
    """The sha256 recorded for a weights file and where it is recorded: ``<path>.sha256`` (imported
    weights), or the ``sha256`` of the ``model.json`` beside a run's ``model.safetensors``.
    ``(None, "")`` when nothing is recorded (a file from elsewhere, a run older than the checksums)."""
    path = Path(path)
    sidecar = path.with_name(path.name + SHA256_SUFFIX)
    if sidecar.is_file():
        return sidecar.read_text().split()[0].lower(), str(sidecar)
    spec = path.with_name("model.json")
    if path.name == "model.safetensors" and spec.is_file():
        import json

        digest = json.loads(spec.read_text()).get("sha256")
        return (str(digest).lower() if digest else None), str(spec)
    return None, ""


def _remedy(path: Path) -> str:
    if path.name == "model.safetensors":
        return "restore it from a backup or train the run again (kinetoscope train ... --overwrite)"
    return "restore it from a backup or import/export it again"


def start_sha256(path: str | Path) -> Future[str]:
    """The sha256 of a file, computed in a background thread (hashlib releases the GIL), so a loader can
    build its model meanwhile; ``.result()`` waits for it."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="sha256")
    future = pool.submit(sha256_file, path)
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future


def read_safetensors(
    path: str | Path, sha256: str | None = None, digest: Future[str] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, after checking its sha256 against ``sha256`` (default: the one
    ``recorded_sha256`` finds). A mismatch or an unreadable file raises ``DamagedFileError``. ``digest``:
    the file's sha256 started earlier with ``start_sha256`` (hashing overlaps the caller's work)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    where = "the expected checksum"
    if sha256 is None:
        sha256, where = recorded_sha256(path)
    if sha256 is not None and digest is None:
        digest = start_sha256(path)  # hashed while the file is parsed
    try:
        state, error = load_file(str(path)), None
    except SafetensorError as exc:
        state, error = {}, exc
    if sha256 is not None and digest is not None and digest.result() != sha256:
        raise DamagedFileError(
            f"{path} is damaged: its sha256 differs from the one recorded in {where} (truncated, overwritten "
            f"or replaced); {_remedy(path)}"
        )
    if error is not None:
        raise DamagedFileError(f"{path} is damaged ({error}); {_remedy(path)}") from None
    return state


def load_safetensors(
    model: nn.Module, path: str | Path, sha256: str | None = None, digest: Future[str] | None = None
) -> nn.Module:
    """Load ``path`` into ``model`` strictly: the file must match its recorded sha256 (``read_safetensors``),
    names and shapes must match, else ``WeightMismatchError``."""
    path = Path(path)
    state = read_safetensors(path, sha256, digest)
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
