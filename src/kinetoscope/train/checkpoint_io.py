"""Checkpoints that a crash cannot half-write, and a resume that survives a damaged ``last.ckpt``.

Lightning's own writer serialises to memory and copies the bytes over a temporary file made in the
system temp folder, without fsync; when that folder is on another disk the final copy is not atomic,
so a kill (or a power cut) during it can leave a truncated ``last.ckpt`` and no good file beside it.
``AtomicCheckpointIO`` writes beside the target, fsyncs, renames and fsyncs the folder: a checkpoint
on disk is either the old one or the new one. Loading goes through ``load_torch_file``
(``weights_only=True``; a damaged or pickled-code file is refused with one line of our own).

``resume_checkpoint`` picks what ``train --resume`` continues from: ``last.ckpt`` when it loads, else
the newest checkpoint that does, saying which file was damaged and which one it uses.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from kinetoscope.models.weights import DamagedFileError, load_torch_file
from kinetoscope.utils import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to memory, then temporary file beside the target + fsync + rename + folder fsync."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory: a full disk is then an OSError of the write, naming the file
        with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as fh:
            fh.write(buffer.getbuffer())

    def load_checkpoint(self, path: Any, map_location: Any = "cpu", weights_only: bool | None = None) -> dict[str, Any]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        return load_torch_file(path, map_location=map_location)


def checkpoint_files(run_dir: str | Path) -> list[Path]:
    """``checkpoints/*.ckpt`` of a run, newest first (``last.ckpt`` first among equally new files)."""
    folder = Path(run_dir) / "checkpoints"
    files = list(folder.glob("*.ckpt")) if folder.is_dir() else []
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name == "last.ckpt"), reverse=True)


def resume_checkpoint(run_dir: str | Path, quiet: bool = False) -> Path:
    """The checkpoint ``train --resume`` continues from: the newest one that loads completely.

    A damaged file is reported on stderr (``quiet`` silences it, for the extra DDP processes) and
    skipped; ``DamagedFileError`` when every checkpoint is damaged, ``FileNotFoundError`` when there is
    none."""
    run_dir = Path(run_dir)
    files = checkpoint_files(run_dir)
    if not files:
        raise FileNotFoundError(f"cannot resume: {run_dir / 'checkpoints'} holds no checkpoint (*.ckpt)")
    damaged: list[str] = []
    for path in files:
        try:
            state = load_torch_file(path)
        except DamagedFileError:
            damaged.append(path.name)
            continue
        if not isinstance(state, dict) or "state_dict" not in state or "epoch" not in state:
            damaged.append(path.name)
            continue
        if damaged and not quiet:
            print(f"warning: {', '.join(damaged)} in {run_dir / 'checkpoints'} is damaged; resuming from "
                  f"{path.name} (saved after epoch {state['epoch']})", file=sys.stderr, flush=True)
        return path
    raise DamagedFileError(
        f"cannot resume {run_dir}: every checkpoint is damaged ({', '.join(damaged)}); "
        f"start the run again with --overwrite"
    )
