"""Model profiling: parameters, FLOPs, activation memory and CPU latency.

The figures the documents report next to accuracy (e.g. Feichtenhofer 2017's GFLOPs / params / latency tables,
Stergiou 2021 Ch. 4-5; Mänttäri 2020 §4.2 parameter counts):

- **params** / **trainable_params**: ``sum(p.numel())`` over ``model.parameters()`` (BatchNorm running
  statistics are buffers and are not counted).
- **flops**: PyTorch's own counter, ``torch.utils.flop_counter.FlopCounterMode``, for one forward of one
  clip. It counts **2 FLOPs per multiply-add** (a ``k``-term dot product = ``2k`` FLOPs) and only the ops
  it has formulas for — convolutions, matrix products, attention; BatchNorm, activations, pooling and
  element-wise ops are not counted. ``gmacs = flops / 2 / 1e9`` is the multiply-add count many papers
  call "GFLOPs". When the model is built from a name it is built on the ``meta`` device, so counting
  costs no arithmetic.
- **activation_bytes**: the sum of the sizes of the distinct tensors returned by leaf modules during
  one forward of one clip (a tensor written in place by e.g. ``ReLU(inplace=True)`` counts once) — the
  memory a training step keeps for the backward pass, roughly.
- **latency_ms**: median wall time of ``repeats`` forwards of a batch of ``batch`` clips under
  ``torch.inference_mode`` on the CPU, after one warm-up; ``threads`` records ``torch.get_num_threads``.

Two-stream models (``streams == ("rgb", "flow")``) get both inputs: the RGB clip of ``input_shape`` and a
flow clip with ``model.flow_channels`` channels (default: the RGB channel count) and the same ``T, H, W``.
"""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

FLOP_CONVENTION = "2 FLOPs per multiply-add (torch.utils.flop_counter); GMACs = GFLOPs / 2"


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(all, trainable)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def build_for_input(name: str, input_shape: tuple[int, ...], num_classes: int, options: dict[str, Any],
           device: str | torch.device) -> nn.Module:
    """Build a registered model whose size options (``input_size``, ``frames``) follow ``input_shape``."""
    from kinetoscope.models import create_model, list_models, model_options

    options = dict(options)
    known = model_options(name) if name in list_models() else {}  # list_models registers every family
    channels, frames, height, width = input_shape
    if "input_size" in known and "input_size" not in options and height == width:
        options["input_size"] = height
    if "frames" in known and "frames" not in options:
        options["frames"] = frames
    with torch.device(device):
        return create_model(name, num_classes=num_classes, in_channels=channels, **options)


def example_inputs(model: nn.Module, input_shape: tuple[int, ...], batch: int = 1,
                   device: str | torch.device = "cpu", flow_shape: tuple[int, ...] | None = None
                   ) -> tuple[torch.Tensor, ...]:
    """Random inputs in the order ``model.forward`` takes them: ``[batch, *input_shape]`` per stream."""
    if len(input_shape) != 4:
        raise ValueError(f"input_shape={tuple(input_shape)!r} must be (C, T, H, W), e.g. (3, 16, 112, 112)")
    inputs = []
    for stream in getattr(model, "streams", ("rgb",)):
        shape = tuple(input_shape)
        if stream == "flow":
            shape = flow_shape or (getattr(model, "flow_channels", input_shape[0]), *input_shape[1:])
        inputs.append(torch.randn(batch, *shape, device=device))
    return tuple(inputs)


def count_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[int, dict[str, int]]:
    """FLOPs of one forward (2 per multiply-add) and their split over the model's top-level children."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(*inputs)
    per_module = counter.get_flop_counts()
    top = {}
    for module_name, ops in per_module.items():
        parts = module_name.split(".")
        if len(parts) == 2:  # "Global" is the whole model; "Global.child" a top-level child
            top[parts[1]] = int(sum(ops.values()))
    return int(counter.get_total_flops()), top


def activation_bytes(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Bytes of the distinct tensors output by leaf modules in one forward (in-place outputs once)."""
    seen: dict[int, int] = {}
    kept: list[torch.Tensor] = []  # hold outputs so freed storage is not reused and miscounted

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        for tensor in outputs:
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0),
                                               tensor.numel() * tensor.element_size())
                kept.append(tensor)

    handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return sum(seen.values())


def measure_latency(model: nn.Module, inputs: tuple[torch.Tensor, ...], repeats: int = 10,
                    warmup: int = 1) -> list[float]:
    """Wall times (ms) of ``repeats`` forwards under ``torch.inference_mode`` after ``warmup`` runs."""
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def profile_model(
    name_or_model: str | nn.Module,
    input_shape: tuple[int, ...] = (3, 16, 112, 112),
    num_classes: int = 400,
    batch: int = 1,
    repeats: int = 10,
    latency: bool = True,
    flops: bool = True,
    activations: bool = True,
    flow_shape: tuple[int, ...] | None = None,
    real_flops_fallback: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Parameters, FLOPs, activation memory and CPU latency of a model on clips ``input_shape = (C, T, H, W)``.

    ``name_or_model``: a registered name (built with ``num_classes``, ``in_channels = C`` and
    ``options``; ``input_size`` / ``frames`` options follow ``input_shape`` unless given) or a module.
    FLOPs and activations are per clip; ``latency_ms`` is the median per forward of ``batch`` clips.
    If a named model cannot run on the ``meta`` device, FLOPs are counted on a real forward, or, with
    ``real_flops_fallback=False``, reported as ``None`` (``flops_error`` says why).
    Returns a flat dict (see the module docstring for each field's definition).
    """
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) != 4:
        raise ValueError(f"input_shape={input_shape!r} must be (C, T, H, W), e.g. (3, 16, 112, 112)")
    if isinstance(name_or_model, str):
        name = name_or_model
        model = None
        meta_model = build_for_input(name, input_shape, num_classes, options, "meta")
    else:
        name = type(name_or_model).__name__
        model = name_or_model
        meta_model = None
    reference = meta_model if meta_model is not None else model
    reference.eval()
    total, trainable = count_parameters(reference)
    result: dict[str, Any] = {
        "name": name,
        "input_shape": input_shape,
        "num_classes": num_classes if model is None else None,
        "streams": tuple(getattr(reference, "streams", ("rgb",))),
        "params": total,
        "trainable_params": trainable,
    }
    if flops:
        flop_model = reference
        device = "meta" if meta_model is not None else _device_of(reference)
        try:
            count, by_module = count_flops(flop_model, example_inputs(flop_model, input_shape, 1, device,
                                                                      flow_shape))
        except (NotImplementedError, RuntimeError) as error:  # an op without a meta kernel
            if not real_flops_fallback:
                count, by_module = None, {}
                result["flops_error"] = f"not countable on the meta device: {type(error).__name__}: {error}"
            else:
                model = model or build_for_input(name, input_shape, num_classes, options, "cpu").eval()
                count, by_module = count_flops(model, example_inputs(model, input_shape, 1, "cpu", flow_shape))
        result.update(flops=count, gflops=None if count is None else count / 1e9,
                      gmacs=None if count is None else count / 2e9, flop_convention=FLOP_CONVENTION,
                      flops_by_module=by_module)
    needs_real = activations or latency
    if needs_real and model is None:
        model = build_for_input(name, input_shape, num_classes, options, "cpu").eval()
    if needs_real:
        was_training = model.training
        model.eval()
        device = _device_of(model)
        try:
            if activations:
                result["activation_bytes"] = activation_bytes(
                    model, example_inputs(model, input_shape, 1, device, flow_shape))
            if latency:
                times = measure_latency(model, example_inputs(model, input_shape, batch, device, flow_shape),
                                        repeats=repeats)
                result.update(latency_ms=statistics.median(times), latency_min_ms=min(times), batch=batch,
                              repeats=repeats, threads=torch.get_num_threads(), device=str(device))
        finally:
            model.train(was_training)
    return result


def _device_of(model: nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _human(count: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= scale:
            return f"{count / scale:.2f} {suffix}{unit}"
    return f"{count:.0f} {unit}".rstrip()


def format_profile(profile: dict[str, Any]):
    """A ``rich.table.Table`` of a :func:`profile_model` result, one row per figure."""
    from rich.table import Table

    table = Table(title=f"{profile['name']}  input {'x'.join(map(str, profile['input_shape']))}",
                  show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note")
    table.add_row("parameters", f"{profile['params']:,}", _human(profile["params"]))
    if profile["trainable_params"] != profile["params"]:
        table.add_row("trainable parameters", f"{profile['trainable_params']:,}", "")
    if profile.get("flops") is not None:
        table.add_row("GFLOPs / clip", f"{profile['gflops']:.3f}", "2 FLOPs per multiply-add")
        table.add_row("GMACs / clip", f"{profile['gmacs']:.3f}", "multiply-adds = FLOPs / 2")
    if "activation_bytes" in profile:
        table.add_row("activation memory / clip", _human(profile["activation_bytes"], "B"),
                      "leaf-module outputs of one forward")
    if "latency_ms" in profile:
        table.add_row(f"CPU latency (batch {profile['batch']})", f"{profile['latency_ms']:.1f} ms",
                      f"median of {profile['repeats']}, {profile['threads']} threads, inference_mode")
    return table


def list_profiles(names: list[str] | None = None, input_shape: tuple[int, ...] = (3, 16, 112, 112),
                  num_classes: int = 400) -> list[dict[str, Any]]:
    """Parameters and FLOPs (meta device, no latency) of each registered model at ``input_shape``.

    FLOPs of a model that cannot run on the meta device are ``None`` (kept fast for ``models list``).
    A model that cannot run at that input gets a row with ``error`` (the exception text) instead.
    """
    from kinetoscope.models import list_models

    rows = []
    for name in names or list_models():
        try:
            rows.append(profile_model(name, input_shape, num_classes, latency=False, activations=False,
                                      real_flops_fallback=False))
        except Exception as error:  # one unbuildable model must not hide the others
            rows.append({"name": name, "input_shape": tuple(input_shape), "error": f"{type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}"})
    return rows


def format_profile_list(rows: list[dict[str, Any]]):
    """A ``rich.table.Table`` of :func:`list_profiles` rows: name, streams, params, GFLOPs, GMACs."""
    from rich.table import Table

    shape = "x".join(map(str, rows[0]["input_shape"])) if rows else ""
    table = Table(title=f"registered models at input {shape} (FLOPs: 2 per multiply-add)")
    for column in ("model", "streams", "params", "GFLOPs", "GMACs"):
        table.add_column(column, justify="left" if column in ("model", "streams") else "right")
    for row in rows:
        if "error" in row:
            table.add_row(row["name"], "", "", "", f"[red]{row['error'][:60]}[/red]")
            continue
        if row["flops"] is None:
            flops = macs = "n/a"  # see row["flops_error"]; `models info NAME` counts on a real forward
        else:
            flops, macs = f"{row['gflops']:.2f}", f"{row['gmacs']:.2f}"
        table.add_row(row["name"], "+".join(row["streams"]), f"{row['params']:,}", flops, macs)
    return table


CONVENTION_ATTRIBUTES = ("streams", "per_frame", "explain_layer", "flow_channels", "num_prefix_tokens")


def optimize_for_inference(model: nn.Module, example: torch.Tensor | None = None, fuse: bool = True,
                           channels_last: bool = True) -> nn.Module:
    """A copy of ``model`` prepared for CPU inference; the caller's module is not changed.

    ``fuse``: fold each BatchNorm into the convolution before it (``torch.fx.experimental.optimization.fuse``;
    models fx cannot trace are kept unfused). ``channels_last``: weights in ``torch.channels_last_3d``
    (feed clips with ``clip.contiguous(memory_format=torch.channels_last_3d)`` too).
    ``example`` (optional) is run once through the result as a check. See ``benchmarks/backbones.py`` for
    what each step buys. The result is for ``eval``-mode inference only: it is an fx ``GraphModule`` whose
    forward calls leaf modules directly, so hooks on container modules (e.g. Grad-CAM on ``layer4``) do
    not fire — explain with the original model. The convention attributes (``streams``, ``per_frame``,
    ``explain_layer``, ...) are copied over.
    """
    from torch.fx.experimental import optimization as fx_optimization

    optimized = copy.deepcopy(model).eval()
    if fuse:
        try:
            optimized = fx_optimization.fuse(optimized)
        except Exception:  # fx raises many error types on control flow it cannot trace
            optimized = copy.deepcopy(model).eval()
    if channels_last:
        optimized = optimized.to(memory_format=torch.channels_last_3d)
    for attribute in CONVENTION_ATTRIBUTES:
        if hasattr(model, attribute) and not hasattr(optimized, attribute):
            setattr(optimized, attribute, getattr(model, attribute))
    if example is not None:
        with torch.inference_mode():
            optimized(example)
    return optimized
