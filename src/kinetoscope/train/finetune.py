"""Fine-tuning: start from other weights, re-initialise a head of another size, freeze parts.

``train.init_from`` takes a run directory, a ``.safetensors`` file (e.g. from ``models import``) or
published weights by name (``torchvision:r2plus1d_18``, see ``kinetoscope.models.pretrained``).
When the weights were trained for another number of classes (400 Kinetics classes, a 7-class run),
the classifier's tensors are left at their fresh initialisation and the report says so; any other
mismatch is an error listing the keys. ``train.freeze`` names top-level modules (``stem``,
``layer1``…) whose parameters stop training and whose BatchNorm statistics stay those of the loaded
weights; ``train.trainable`` is the complement (prefixes of parameter names; ``head`` means the
classifier of any model). Broomé 2022 §3.3 fine-tunes only the head this way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


def classifier_prefix(model: nn.Module) -> str:
    """Name of the module holding the model's last weight tensor (its classifier: ``fc``,
    ``classifier``, ``Logits``, ``head.fc``…)."""
    weights = [n for n, p in model.named_parameters() if n.endswith("weight") and p.ndim >= 2]
    if not weights:
        raise ValueError(f"{type(model).__name__} has no weight matrix to call its head")
    return weights[-1].rsplit(".", 1)[0]


def resolve_init_from(init_from: str | Path) -> tuple[Path, str]:
    """The ``.safetensors`` file behind ``train.init_from`` and a line saying where it came from."""
    from kinetoscope.models.pretrained import is_pretrained_name, pull

    if is_pretrained_name(init_from):
        path, note = pull(str(init_from))
        return path, note
    path = Path(init_from)
    path = path / "model.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"train.init_from: {path} is missing (give a run directory, a .safetensors file, or a name from "
            f"`kinetoscope models pull --list`)"
        )
    return path, f"weights from {path}"


def load_init_weights(model: nn.Module, path: Path) -> list[str]:
    """Load ``path`` into ``model``; a classifier of another size is kept at its fresh initialisation.
    Returns what was re-initialised (empty when everything fitted)."""
    from kinetoscope.models.weights import WeightMismatchError, compare_state, read_safetensors

    state = read_safetensors(path)  # checked against its recorded sha256 (model.json or <file>.sha256)
    expected = model.state_dict()
    missing, unexpected, shapes = compare_state(state, expected, repr)
    head = classifier_prefix(model) + "."
    resized = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or any(not k.startswith(head) for k in resized):
        raise WeightMismatchError(
            f"train.init_from {path} does not fit {type(model).__name__} ({len(state)} tensors in the file, "
            f"{len(expected)} in the model):",
            missing,
            unexpected,
            shapes,
        )
    if not resized:
        model.load_state_dict(state, strict=True)
        return []
    before, after = state[resized[0]].shape[0], expected[resized[0]].shape[0]
    for k in resized:
        state[k] = expected[k]
    model.load_state_dict(state, strict=True)
    return [f"re-initialised the head {head[:-1]} ({before} -> {after} classes)"]


def freeze(model: nn.Module, frozen: list[str] | None, trainable: list[str] | None) -> list[nn.Module]:
    """Stop training ``frozen`` top-level modules, or everything outside the ``trainable`` prefixes
    (``head`` = the classifier). Returns the BatchNorm layers left with no trainable parameter, whose
    statistics must stay fixed (see ``frozen_batchnorm_callback``)."""
    if frozen and trainable:
        raise ValueError("give train.freeze or train.trainable, not both")
    if not frozen and not trainable:
        return []
    names = [n for n, _ in model.named_parameters()]
    if frozen:
        children = [n for n, _ in model.named_children()]
        unknown = [f for f in frozen if f not in children]
        if unknown:
            raise ValueError(f"train.freeze: {unknown} are not modules of {type(model).__name__}; its modules "
                             f"are {children}")
        for name, param in model.named_parameters():
            param.requires_grad_(name.split(".", 1)[0] not in frozen)
    else:
        prefixes = [classifier_prefix(model) if p == "head" and not any(n.startswith("head") for n in names)
                    else p for p in trainable]  # type: ignore[union-attr]
        unknown = [p for p in prefixes if not any(n.startswith(p) for n in names)]
        if unknown:
            raise ValueError(f"train.trainable: no parameter name starts with {unknown}; e.g. {names[-3:]}")
        for name, param in model.named_parameters():
            param.requires_grad_(any(name.startswith(p) for p in prefixes))
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not any(p.requires_grad for p in m.parameters())]


def frozen_batchnorm_callback(modules: list[nn.Module]) -> Any:
    """A Lightning callback keeping frozen BatchNorm layers in eval mode, so their running statistics
    stay those of the loaded weights (as Keras does for non-trainable layers)."""
    import lightning.pytorch as pl

    class FrozenBatchNorm(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            for m in modules:
                m.eval()

    return FrozenBatchNorm()


def weights_normalization(init_from: str | Path | None) -> tuple[list[float], list[float]] | None:
    """The RGB normalisation the ``init_from`` weights were trained with: a published name's recipe, a
    converted file's metadata, or a run directory's own ``data.normalize``; ``None`` if unknown."""
    from kinetoscope.config import RunConfig
    from kinetoscope.data.transforms import NORMALIZATIONS
    from kinetoscope.models.pretrained import is_pretrained_name, lookup
    from kinetoscope.models.pretrained import weights_normalization as file_normalization

    if init_from is None:
        return None
    if is_pretrained_name(init_from):
        entry = lookup(str(init_from))
        return entry.mean, entry.std
    path = Path(init_from)
    if path.is_dir() and (path / "config.yaml").is_file():
        value = RunConfig.load(path).data.normalize
        if isinstance(value, tuple):
            return list(value[0]), list(value[1])
        if value in NORMALIZATIONS:
            return tuple(list(v) for v in NORMALIZATIONS[value])  # type: ignore[return-value]
        return None
    path = path / "model.safetensors" if path.is_dir() else path
    return file_normalization(path) if path.is_file() else None
