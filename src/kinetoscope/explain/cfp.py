"""Class Feature Pyramids: the channels, layer by layer, that a class decision flows through (Stergiou 2021
ch. 7 §7.5, Eqs. 7.2–7.5, Fig. 7.9, Table 7.1; see docs/deviations.md, 'Class Feature Pyramids threshold').

1. **Class features** (Eqs. 7.2–7.3). At the explained layer ``L`` (``model.explain_layer``) with
   activations ``a^L`` and class ``c`` (predicted unless given), keep channel ``j`` when
   ``minmax_j(W[c, j] · pool_st(a^L)_j) ≥ θ``. ``W[c, j]`` is the classifier weight behind global
   average pooling, read as ``Σ_r ∂y_c / ∂a^L_j(r)`` (identical for GAP -> linear heads; see
   ``explain/tubes.py``). Eq. 7.3's ``σ(a* + θ) > 0`` is always true: the min-max-normalised
   score is thresholded instead.
2. **Back-step** l -> l−1 (Eqs. 7.4–7.5). For a kept output channel ``j`` of a conv with kernel ``k``
   (C_l × C_{l−1} × kT × kH × kW): ``r_j = mean_extent(k_j) ⊙ pool_st(a^{l−1})``, min-maxed over the
   input channels ``j`` is connected to; children are the ``m`` with ``r_j[m] ≥ θ``. The author's code
   first divides by the sum; a positive factor does not change the min-max and a negative sum would
   invert the ranking, so the division is left out.
3. **Feature-wise** (``mode="feature"``): a child set per parent, kept as a DAG (a channel reached from
   several parents is one node with several parents — the thesis' "duplicates"). **Layer-wise**
   (``mode="layer"``, default): the mean of the parents' ``r`` (each min-maxed), min-maxed again so the
   strongest channel always survives (a deviation: a plain mean can stay below θ everywhere), one set.
4. **Blocks** (Fig. 7.9, §7.5.4), found generically on the model's ``torch.fx`` graph:
   * residual: an ``add`` passes the kept indices unchanged to both summands (the all-ones shortcut);
     they meet the main path again at the block input, where the sets are united. 1x1x1 projection
     shortcuts are convs and are back-stepped like any conv;
   * grouped / depth-wise convs: kernels inflated to all C_{l−1} input channels with **zeros** outside
     the group (the released code repeats them), so unconnected channels are never selected. A channel
     with a single connected input (depth-wise) keeps that input, as a ones-kernel would;
   * branches: ``cat`` on channels splits the indices over the branches; the depth of a tensor is the
     longest conv path from ``L`` to it (the longest branch is the spine), so the shorter branches'
     indices are carried at that depth (padded with ones-kernels) and united where the branches start;
   * channel-preserving ops (BN, activations, pooling, dropout, SE gating ``x · g``: the gate ``g`` of
     volume 1 is not a feature path) pass indices through; any other channel-changing op ends the walk.

Depth ``d`` = number of conv back-steps (3 in all reported runs; θ 0.55–0.67, Table 7.1; default 0.6).
Each level is rendered as in Saliency Tubes: ``Σ_{kept m} minmax(a_m)²`` over the level's tensors,
cubic-spline upsampled to the input (H, W then T) and min-max normalised. Models must be traceable by
``torch.fx`` (all registered 3D CNNs are; Conv modules are kept as leaves so their kernels are read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from kinetoscope.explain.base import (
    ClipInput,
    Explanation,
    as_stream_list,
    resolve_target,
    stream_index,
)
from kinetoscope.explain.gradcam import explain_layer_name
from kinetoscope.explain.tubes import minmax, spline_upsample
from kinetoscope.models.inference import clip_logits
from kinetoscope.registry import EXPLAINERS

MODES = ("layer", "feature")
Key = tuple[str, int]  # (tensor name in the fx graph, channel)


@dataclass
class FeatureNode:
    """A kept channel of one tensor: its back-step depth, relevance score and parents (feature-wise)."""

    depth: int
    tensor: str
    channel: int
    score: float
    parents: list[Key] = field(default_factory=list)


@dataclass
class ClassFeaturePyramid:
    """CFP of one clip: ``levels[d]`` maps tensor name -> {channel: score} at back-step depth ``d``;
    ``heatmaps [D+1, T, H, W]`` in [0, 1], one per level; ``tree`` the kept channels as a DAG keyed by
    (tensor, channel) (feature-wise mode; layer-wise nodes carry no parents)."""

    target: int
    levels: list[dict[str, dict[int, float]]]
    heatmaps: np.ndarray
    tree: dict[Key, FeatureNode]
    modules: dict[str, str]  # tensor name -> module that produced it (for reading the levels)

    def kept(self, depth: int) -> dict[str, list[int]]:
        return {name: sorted(channels) for name, channels in self.levels[depth].items()}


class _ConvLeafTracer(fx.Tracer):
    """Keep every ``nn.ConvNd`` (and subclasses such as the ResNet conv builders) as one graph node."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, nn.modules.conv._ConvNd) or super().is_leaf_module(module, qualified_name)


def trace_model(model: nn.Module) -> fx.GraphModule:
    """The model as a ``torch.fx.GraphModule`` whose conv layers are leaf nodes."""
    tracer = _ConvLeafTracer()
    try:
        graph = tracer.trace(model)
    except Exception as error:  # fx raises many error types for untraceable Python
        raise ValueError(f"Class Feature Pyramids walk the model graph, but torch.fx cannot trace "
                         f"{type(model).__name__}: {error}") from error
    return fx.GraphModule(tracer.root, graph)


class _Recorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, node: fx.Node) -> Any:
        out = super().run_node(node)
        self.values[node] = out
        return out


def _module_path(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] if isinstance(value, tuple) else key for key, value in stack.items()]
    return paths[-1] if paths else ""


def _layer_node(graph: fx.Graph, layer: str) -> fx.Node:
    """The node computing the output of module ``layer``: the node itself for a leaf, otherwise the last
    node recorded inside the module."""
    last = None
    for node in graph.nodes:
        if node.op == "call_module" and node.target == layer:
            return node
        stack = node.meta.get("nn_module_stack") or {}
        paths = {value[0] if isinstance(value, tuple) else key for key, value in stack.items()}
        if layer in paths:
            last = node
    if last is None:
        raise ValueError(f"layer {layer!r} does not appear in the traced graph; pass layer='<dotted module name>'")
    return last


def _is5d(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 5


def _volume(value: torch.Tensor) -> int:
    return int(value.shape[2] * value.shape[3] * value.shape[4])


def _conv_module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    module = gm.get_submodule(str(node.target))
    return module if isinstance(module, nn.Conv3d) else None


def _cat_inputs(node: fx.Node) -> list[fx.Node] | None:
    """Inputs of a channel concatenation ``torch.cat(tensors, dim=1)``, else None."""
    if node.op != "call_function" or node.target is not torch.cat:
        return None
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    if dim != 1:
        return None
    return list(node.args[0])


def _pass_inputs(node: fx.Node, values: dict[fx.Node, Any]) -> list[fx.Node]:
    """Inputs a channel-preserving op passes kept indices to (not broadcast gates of volume 1)."""
    out = values.get(node)
    if not _is5d(out):
        return []
    inputs: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), lambda n: inputs.append(n) or n)
    chosen = []
    for parent in dict.fromkeys(inputs):
        value = values.get(parent)
        if not _is5d(value) or value.shape[1] != out.shape[1]:
            continue
        if _volume(value) == 1 and _volume(out) > 1:
            continue
        chosen.append(parent)
    return chosen


def kernel_connectivity(conv: nn.Conv3d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean_extent(k) [C_out, C_in], connected [C_out, C_in] bool)``: the kernel averaged over its
    T, H, W extent (Eq. 7.5), grouped kernels inflated with zeros outside their group (Fig. 7.9b)."""
    weight = conv.weight.detach().float()
    groups = conv.groups
    c_out, c_in_group = weight.shape[:2]
    c_in = c_in_group * groups
    mean = weight.mean(dim=(2, 3, 4))
    full = torch.zeros(c_out, c_in)
    connected = torch.zeros(c_out, c_in, dtype=torch.bool)
    out_group = c_out // groups
    for g in range(groups):
        rows = slice(g * out_group, (g + 1) * out_group)
        cols = slice(g * c_in_group, (g + 1) * c_in_group)
        full[rows, cols] = mean[rows]
        connected[rows, cols] = True
    return full, connected


def back_step_relevance(kernel: torch.Tensor, connected: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """``r [J, C_in]`` for parent rows ``kernel [J, C_in]`` and ``pooled = pool_st(a^{l−1}) [C_in]`` (Eq. 7.4):
    ``kernel ⊙ pooled`` min-maxed over each row's connected inputs, 0 elsewhere; a row with one connected
    input gives it 1."""
    raw = kernel * pooled.view(1, -1)
    big = torch.finfo(raw.dtype).max
    low = torch.where(connected, raw, torch.full_like(raw, big)).amin(dim=1, keepdim=True)
    high = torch.where(connected, raw, torch.full_like(raw, -big)).amax(dim=1, keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (raw - low) / span.clamp_min(1e-12), torch.zeros_like(raw))
    single = connected.sum(dim=1, keepdim=True) == 1
    scaled = torch.where(single & connected, torch.ones_like(raw), scaled)
    return scaled * connected


@dataclass
class _Selection:
    scores: dict[int, float] = field(default_factory=dict)
    origins: dict[int, set[Key]] = field(default_factory=dict)
    landed: bool = False  # reached by a conv back-step: a level tensor

    def add(self, channel: int, score: float, origins: set[Key]) -> None:
        self.scores[channel] = max(score, self.scores.get(channel, 0.0))
        self.origins.setdefault(channel, set()).update(origins)


def _structural_depths(order: list[fx.Node], top: fx.Node, gm: fx.GraphModule,
                       values: dict[fx.Node, Any]) -> dict[fx.Node, int]:
    """Longest conv-count path from ``top`` to every tensor it depends on (the branch spine rule)."""
    depth = {top: 0}
    for node in order:
        if node not in depth:
            continue
        conv = _conv_module(gm, node)
        if conv is not None:
            targets, step = [node.args[0]], 1
        else:
            targets, step = _cat_inputs(node) or _pass_inputs(node, values), 0
        for parent in targets:
            if isinstance(parent, fx.Node) and _is5d(values.get(parent)):
                depth[parent] = max(depth.get(parent, 0), depth[node] + step)
    return depth


def _pyramid_for_clip(
    b: int,
    gm: fx.GraphModule,
    order: list[fx.Node],
    top: fx.Node,
    values: dict[fx.Node, Any],
    class_weight: torch.Tensor,
    depths: dict[fx.Node, int],
    theta: float,
    max_depth: int,
    mode: str,
) -> tuple[list[dict[str, dict[int, float]]], dict[Key, FeatureNode], dict[str, fx.Node]]:
    top_value = values[top][b].detach().float()
    scores = minmax(class_weight * top_value.mean(dim=(1, 2, 3)), (0,))  # Eqs. 7.2-7.3
    state: dict[fx.Node, _Selection] = {top: _Selection(landed=True)}
    for channel in torch.nonzero(scores >= theta).flatten().tolist():
        state[top].add(channel, float(scores[channel]), set())
    levels: list[dict[str, dict[int, float]]] = [{} for _ in range(max_depth + 1)]
    tree: dict[Key, FeatureNode] = {}
    tensors: dict[str, fx.Node] = {}

    def push(parent: Any, channel: int, score: float, origins: set[Key], landed: bool) -> None:
        if not isinstance(parent, fx.Node) or depths.get(parent, max_depth + 1) > max_depth:
            return
        selection = state.setdefault(parent, _Selection())
        selection.add(channel, score, origins)
        selection.landed |= landed

    for node in order:
        selection = state.pop(node, None)
        if selection is None or not selection.scores:
            continue
        depth = depths[node]
        if selection.landed:  # a level tensor: record it and restart the parent links from here
            levels[depth][node.name] = dict(selection.scores)
            tensors[node.name] = node
            for channel, score in selection.scores.items():
                parents = sorted(selection.origins.get(channel, set())) if mode == "feature" else []
                tree[(node.name, channel)] = FeatureNode(depth, node.name, channel, score, parents)
            selection.origins = {channel: {(node.name, channel)} for channel in selection.scores}
        conv = _conv_module(gm, node)
        if conv is not None:
            source = node.args[0]
            if depths.get(source, max_depth + 1) > max_depth or not _is5d(values.get(source)):
                continue
            kernel, connected = kernel_connectivity(conv)
            pooled = values[source][b].detach().float().mean(dim=(1, 2, 3))
            parents = sorted(selection.scores)
            relevance = back_step_relevance(kernel[parents], connected[parents], pooled)  # [J, C_in]
            if mode == "feature":
                for row, parent in enumerate(parents):
                    for child in torch.nonzero(relevance[row] >= theta).flatten().tolist():
                        push(source, child, float(relevance[row, child]), selection.origins[parent], True)
            else:
                union = connected[parents].any(dim=0)
                mean = relevance.mean(dim=0)
                low = mean[union].min()
                span = mean[union].max() - low
                layer_scores = torch.where(span > 0, (mean - low) / span.clamp_min(1e-12),
                                           torch.ones_like(mean)) * union
                origins = set().union(*(selection.origins[p] for p in parents))
                for child in torch.nonzero(layer_scores >= theta).flatten().tolist():
                    push(source, child, float(layer_scores[child]), origins, True)
            continue
        branches = _cat_inputs(node)
        if branches is not None:
            offset = 0
            for branch in branches:
                width = values[branch].shape[1]
                for channel, score in selection.scores.items():
                    if offset <= channel < offset + width:
                        push(branch, channel - offset, score, selection.origins[channel], False)
                offset += width
            continue
        for parent in _pass_inputs(node, values):
            for channel, score in selection.scores.items():
                push(parent, channel, score, selection.origins[channel], False)
    return levels, tree, tensors


def _render_level(level: dict[str, dict[int, float]], tensors: dict[str, fx.Node], values: dict[fx.Node, Any],
                  b: int, size: tuple[int, int, int]) -> np.ndarray:
    total = np.zeros(size, dtype=np.float64)
    for name, channels in level.items():
        if not channels:
            continue
        activations = values[tensors[name]][b].detach().float()[sorted(channels)]
        low_res = (minmax(activations, (1, 2, 3)) ** 2).sum(dim=0)
        total += spline_upsample(low_res.double().cpu().numpy(), size)
    total = np.clip(total, 0.0, None)
    peak = total.max()
    return (total / peak if peak > 0 else total).astype(np.float32)


def class_feature_pyramids(
    model: nn.Module,
    clips: ClipInput,
    target: Any = None,
    layer: str | None = None,
    *,
    stream: str | None = None,
    theta: float = 0.6,
    depth: int = 3,
    mode: str = "layer",
    graph: fx.GraphModule | None = None,
) -> list[ClassFeaturePyramid]:
    """Class Feature Pyramids of each clip in ``clips [B, C, T, H, W]`` (Stergiou 2021 §7.5).

    ``target`` None = predicted class; ``layer`` the top of the pyramid (default ``model.explain_layer``);
    ``theta`` the selection threshold θ; ``depth`` the number of back-steps; ``mode`` "layer" | "feature";
    ``graph`` a precomputed :func:`trace_model` (tracing costs seconds on large models). The heat-maps are
    at the size of the ``stream`` input (default the first).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if not 0.0 <= theta <= 1.0:
        raise ValueError(f"theta={theta}; the min-max-normalised scores lie in [0, 1] (Table 7.1 uses 0.55–0.67)")
    if depth < 0:
        raise ValueError(f"depth={depth}; give the number of back-steps (0 = the explained layer only)")
    inputs = [t.detach() for t in as_stream_list(model, clips)]
    index = stream_index(model, stream)
    name = layer or explain_layer_name(model, stream)
    gm = graph if graph is not None else trace_model(model)
    top = _layer_node(gm.graph, name)
    was_training = model.training
    model.eval()
    gm.eval()
    try:
        recorder = _Recorder(gm)
        with torch.enable_grad():
            output = recorder.run(*[t.clone().requires_grad_(True) for t in inputs])
            logits = clip_logits(output[0] if isinstance(output, (tuple, list)) else output)
            targets = resolve_target(target, logits.detach())
            activations = recorder.values[top]
            if not _is5d(activations):
                raise ValueError(f"CFP needs activations [B, C, T', H', W'] at {name!r}; got "
                                 f"{getattr(activations, 'shape', type(activations))}")
            (grads,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), activations)
    finally:
        model.train(was_training)
    class_weights = grads.sum(dim=(2, 3, 4)).float()  # W[c, j] behind GAP (tubes.py docstring)
    values = recorder.values
    nodes = list(gm.graph.nodes)
    order = list(reversed(nodes[: nodes.index(top) + 1]))
    depths = _structural_depths(order, top, gm, values)
    size = tuple(inputs[index].shape[2:])
    pyramids = []
    for b in range(inputs[0].shape[0]):
        levels, tree, tensors = _pyramid_for_clip(b, gm, order, top, values, class_weights[b], depths, theta,
                                                  depth, mode)
        heatmaps = np.stack([_render_level(level, tensors, values, b, size) for level in levels])
        modules = {tensor: _module_path(node) for tensor, node in tensors.items()}
        pyramids.append(ClassFeaturePyramid(int(targets[b]), levels, heatmaps, tree, modules))
    return pyramids


def combined_heatmap(pyramid: ClassFeaturePyramid, levels: Sequence[int] | None = None) -> np.ndarray:
    """The levels' maps summed and min-max normalised ``[T, H, W]`` (the concatenated view of Fig. 7.12)."""
    chosen = pyramid.heatmaps if levels is None else pyramid.heatmaps[list(levels)]
    total = chosen.sum(axis=0)
    low, high = total.min(), total.max()
    return ((total - low) / (high - low) if high > low else np.zeros_like(total)).astype(np.float32)


@EXPLAINERS.register("cfp")
def explain_cfp(model: nn.Module, inputs: list[torch.Tensor], *, target: Any = None, stream: str | None = None,
                layer: str | None = None, theta: float = 0.6, depth: int = 3, mode: str = "layer") -> Explanation:
    """Explainer ``cfp``: heat-maps are the pyramid's levels combined; values per clip give the number
    of kept channels at each level (``level0_channels`` ... ``level{depth}_channels``)."""
    pyramids = class_feature_pyramids(model, inputs, target, layer, stream=stream, theta=theta, depth=depth,
                                      mode=mode)
    values = []
    for pyramid in pyramids:
        row: dict[str, Any] = {"target": pyramid.target}
        for d, level in enumerate(pyramid.levels):
            row[f"level{d}_channels"] = sum(len(channels) for channels in level.values())
        values.append(row)
    return Explanation(method="cfp", targets=np.array([p.target for p in pyramids], dtype=np.int64),
                       heatmaps=np.stack([combined_heatmap(p) for p in pyramids]), values=values)
