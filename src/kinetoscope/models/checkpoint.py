"""Exported weights of a run: ``model.safetensors`` + ``model.json`` (how to rebuild the model, and the
sha256 of the weights file).

Loading never unpickles: safetensors holds only tensors, the JSON only names and numbers. Every load
checks the sha256 first (``weights.read_safetensors``): a damaged or replaced weights file is refused
with one line naming it, before anything is computed or written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from kinetoscope.utils import atomic_write_json, sha256_file


def save_run_model(model: nn.Module, run_dir: str | Path, spec: dict[str, Any]) -> None:
    """Write ``model.safetensors``, then ``model.json`` ({name, num_classes, in_channels, options, classes,
    sha256 of the weights file as written})."""
    from kinetoscope.models.weights import save_safetensors

    run_dir = Path(run_dir)
    weights = save_safetensors(model, run_dir / "model.safetensors", metadata={"model": spec["name"]})
    atomic_write_json(run_dir / "model.json", {**spec, "sha256": sha256_file(weights)})


def weights_record(path: str | Path) -> dict[str, str]:
    """``{"path", "sha256"}`` of a weights file a run started from (``train.init_from``), for its model.json."""
    path = Path(path)
    path = path / "model.safetensors" if path.is_dir() else path
    return {"path": str(path), "sha256": sha256_file(path)}


def load_run_model(run_dir: str | Path, device: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's model from ``model.json``, load ``model.safetensors`` strictly, and move it to
    ``device`` (default: stay on the CPU); returns ``(model in eval mode, spec)``."""
    from kinetoscope.models import create_model
    from kinetoscope.models.weights import load_safetensors, start_sha256

    run_dir = Path(run_dir)
    spec_path, weights_path = run_dir / "model.json", run_dir / "model.safetensors"
    for p in (spec_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} is missing: {run_dir} is not a finished run (train it first)")
    spec = json.loads(spec_path.read_text())
    # checked against model.json's sha256 (runs older than it have none), hashed while the model is built
    digest = start_sha256(weights_path) if spec.get("sha256") else None
    model = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec.get("options", {}))
    load_safetensors(model, weights_path, digest=digest)
    model.eval()
    if device is not None:
        model.to(device)
    return model, spec


def read_run_yaml(run_dir: str | Path) -> dict[str, Any]:
    """A run directory's ``config.yaml`` as a plain dict, without validating it as a RunConfig (Detect &
    Track runs keep their own settings there)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a kinetoscope run directory")
    return yaml.safe_load(path.read_text()) or {}


def run_task(run_dir: str | Path) -> str:
    """``"detect_track"`` for a Detect & Track run (object detection), ``"classification"`` otherwise."""
    path = Path(run_dir) / "config.yaml"
    return str(read_run_yaml(run_dir).get("task", "classification")) if path.is_file() else "classification"
