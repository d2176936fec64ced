"""``kinetoscope export RUN --format torchscript|onnx|exported-program``: a trained model for other runtimes.

Each format is written from the eager model on an example clip of the run's shape, loaded back
from disk and run on a real clip of the run's data; the largest absolute difference from the eager
model's logits is reported and an export that differs by more than ``tolerance`` (1e-4) is removed
and refused. Formats:

* ``torchscript`` — ``torch.jit.trace`` (``model.ts``): loads with ``torch.jit.load`` without
  kinetoscope installed;
* ``exported-program`` — ``torch.export`` (``model.pt2``): ``torch.export.load(path).module()``;
* ``onnx`` — ``torch.onnx.export`` (``model.onnx``), checked with ONNX Runtime; needs the optional
  ``onnx`` extra (``pip install kinetoscope[onnx]``).

The graphs are recorded for the clip shape of the run (``[1, C, T, H, W]`` per stream; the batch of
TorchScript and ONNX graphs is fixed too): a different shape needs a new export. ConvLSTM layers
run their fused C kernel inside an autograd Function, which no graph format can hold; while a graph
is being recorded the layer switches to its step-by-step PyTorch form
(``layers.convlstm.ConvLSTM.forward_stepwise``), the same function, so the exported graph is
checked against the eager model with the kernel. ``docs/export.md`` lists which models export to
which format.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kinetoscope.utils import atomic_path

FORMATS = ("torchscript", "onnx", "exported-program")
SUFFIXES = {"torchscript": ".ts", "onnx": ".onnx", "exported-program": ".pt2"}
TOLERANCE = 1e-4


class ExportError(ValueError):
    """A model/format pair that cannot be exported, or an export that does not reproduce the model."""


def _quiet():
    """Silence tracer warnings and the exporters' loggers (the console stays clean)."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx"):
        logger = logging.getLogger(name)
        previous = logger.level
        logger.setLevel(logging.ERROR)
        stack.callback(logger.setLevel, previous)
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    return stack


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ExportError(f"--format onnx needs the packages {', '.join(missing)}: install the optional extra "
                          "with `pip install kinetoscope[onnx]` (or pip install onnx onnxscript onnxruntime)")


def _reason(error: BaseException) -> str:
    """The first line of the innermost exception (the ONNX exporter wraps torch.export's), no colours."""
    import re

    while error.__cause__ is not None:
        error = error.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first[:300]}"


def export_model(model: nn.Module, example: Sequence[torch.Tensor], path: str | Path, fmt: str) -> Path:
    """Write ``model`` (in eval mode) traced on ``example`` (its inputs in ``model.streams`` order) in
    ``fmt`` to ``path`` atomically; a model the format cannot hold raises :class:`ExportError` with why."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}; expected one of {FORMATS}")
    if fmt == "onnx":
        _require_onnx()
    model.eval()
    example = tuple(example)
    path = Path(path)
    name = type(model).__name__
    try:
        with _quiet(), torch.no_grad(), atomic_path(path) as tmp:
            if fmt == "torchscript":
                torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(tmp))
            elif fmt == "exported-program":
                torch.export.save(torch.export.export(model, example), str(tmp))
            else:
                program = torch.onnx.export(model, example, dynamo=True, external_data=False, verbose=False)
                program.save(str(tmp))
    except ExportError:
        raise
    except Exception as error:  # the exporters raise many kinds; the message is what the user needs
        raise ExportError(f"{name} cannot be exported as {fmt}: {_reason(error)} "
                          "(docs/export.md lists what exports where)") from error
    return path


def load_exported(path: str | Path, fmt: str) -> Callable[..., torch.Tensor]:
    """A callable ``f(*inputs) -> logits`` running the exported file (ONNX through ONNX Runtime)."""
    path = Path(path)
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda *inputs: module(*inputs)
    if fmt == "exported-program":
        module = torch.export.load(str(path)).module()
        return lambda *inputs: module(*inputs)
    if fmt == "onnx":
        _require_onnx()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(*inputs: torch.Tensor) -> torch.Tensor:
            feed = {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}
            return torch.from_numpy(session.run(None, feed)[0])

        return run
    raise ValueError(f"format {fmt!r}; expected one of {FORMATS}")


def max_abs_difference(model: nn.Module, exported: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor]
                       ) -> float:
    """Largest ``|exported(inputs) - model(inputs)|`` over all logits."""
    with torch.no_grad():
        expected = model(*inputs).float()
        got = exported(*inputs)
    got = got[0] if isinstance(got, (tuple, list)) else got
    if tuple(got.shape) != tuple(expected.shape):
        raise ExportError(f"exported output has shape {tuple(got.shape)}, the model's {tuple(expected.shape)}")
    return float((got.float() - expected).abs().max())


def export_and_check(model: nn.Module, clip: Sequence[torch.Tensor], path: str | Path, fmt: str,
                     tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Export ``model`` on ``clip`` (batch of one, per stream), reload it and compare on the same clip;
    returns ``{path, format, max_abs_diff}``. Above ``tolerance`` the file is removed and
    :class:`ExportError` is raised with the difference."""
    path = export_model(model, clip, path, fmt)
    with _quiet():
        diff = max_abs_difference(model, load_exported(path, fmt), clip)
    if not diff <= tolerance:  # also catches NaN
        path.unlink(missing_ok=True)
        raise ExportError(f"{type(model).__name__} as {fmt} differs from the eager model by max |diff| = "
                          f"{diff:.3g} > {tolerance:g} on the check clip; the export was removed")
    return {"path": str(path), "format": fmt, "max_abs_diff": diff}


def run_clip(run_dir: Path, model: nn.Module, spec: dict[str, Any]) -> list[torch.Tensor]:
    """A real clip of the run's data (first clip of its validation split, else of the whole dataset)
    in ``model.streams`` order, each ``[1, C, T, H, W]``."""
    from kinetoscope.config import RunConfig
    from kinetoscope.data.datamodule import config_dataset
    from kinetoscope.models.inference import model_inputs

    config = RunConfig.load(run_dir)
    flow = "flow" in getattr(model, "streams", ("rgb",))
    try:  # the run's validation clips through its evaluation transform, as evaluate feeds them
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow)
    except ValueError:  # no validation part: any clip of the data
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow, root=config.data.root, split=None)
    sample = dataset[0]
    batch = {k: v.unsqueeze(0) for k, v in sample.items() if isinstance(v, torch.Tensor)}
    return model_inputs(model, batch)


def export_run(run_dir: str | Path, fmt: str, out: str | Path | None = None, tolerance: float = TOLERANCE
               ) -> dict[str, Any]:
    """Export a finished run's model in ``fmt`` (default file ``RUN/export/model<suffix>``), checked on a
    real clip of its data (module docstring); returns ``{path, format, max_abs_diff, model}``."""
    from kinetoscope.models.checkpoint import load_run_model

    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}; expected one of {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    model, spec = load_run_model(run_dir)
    clip = run_clip(run_dir, model, spec)
    path = Path(out) if out else run_dir / "export" / f"model{SUFFIXES[fmt]}"
    result = export_and_check(model, clip, path, fmt, tolerance)
    result["model"] = spec["name"]
    result["input_shapes"] = [list(t.shape) for t in clip]
    return result


__all__ = ["FORMATS", "ExportError", "export_and_check", "export_model", "export_run", "load_exported"]
