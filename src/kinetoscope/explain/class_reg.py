"""Class Regularisation explanation maps (Stergiou 2021 §6.3.3, Fig. 6.4): a Saliency Tube at every block
that Class Regularisation is applied to.

CR represents the classes in each regularised layer's own feature space: ``M_l = ReLU(Map_l(W))`` gives
class ``c`` one weight per channel of layer ``l`` (:meth:`ClassRegularisation.class_feature_weights`).
Those weights take the place of the classifier weights of Saliency Tubes (Stergiou 2021 Eq. 7.1), with
no back-propagation from the prediction to the layer:

    z_{c→j} = minmax_R( M_l[c, j] · a_l,j ),   map_l = Σ_{j: M_l[c, j] > 0} z_{c→j}²

``a_l`` is the layer's output after CR (the regularised features the next block sees); ``c`` the target
class (default: the predicted one). The map is upsampled to the input with the cubic splines of
:func:`kinetoscope.explain.tubes.spline_upsample` and normalised to [0, 1] — so early layers, late layers
and the prediction can be compared side by side (Fig. 6.4).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from kinetoscope.explain.base import ClipInput, Explanation, as_stream_list, capture_output, resolve_target
from kinetoscope.explain.tubes import saliency_tube_volumes
from kinetoscope.layers.class_reg import ClassRegularisation
from kinetoscope.registry import EXPLAINERS


def class_reg_layers(model: nn.Module) -> dict[str, ClassRegularisation]:
    """The model's Class Regularisation modules by name, in forward order; an error if it has none."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, ClassRegularisation)}
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no Class Regularisation layers; CR maps need a model built with CR "
            "(e.g. r3d_50_cr, wide_r3d_50_cr, mtnet_m_cr)"
        )
    return layers


def _classifier_weight(model: nn.Module) -> torch.Tensor:
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise ValueError(f"{type(model).__name__}: CR maps read the classifier weight from model.fc (nn.Linear)")
    return fc.weight


@torch.no_grad()
def class_reg_maps(
    model: nn.Module, clips: ClipInput, target: Any = None, *, tau: float = 0.0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CR maps ``{layer name: [B, T, H, W] in [0, 1]}`` for ``clips [B, C, T, H, W]`` and the explained class
    per clip ``[B]`` (``target`` None = predicted; an int or one per clip). ``tau`` drops channels whose
    ranked contribution is below it (Saliency Tubes' threshold)."""
    (x,) = as_stream_list(model, clips)
    layers = class_reg_layers(model)
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    hooks = [capture_output(layer, outputs[name]) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    targets = resolve_target(target, logits)
    weight = _classifier_weight(model)
    maps = {}
    for name, layer in layers.items():
        activations = outputs[name][-1]
        class_features = layer.class_feature_weights(weight)[targets]  # [B, C_l]
        weights = class_features[:, :, None, None, None].expand_as(activations)
        maps[name], _ = saliency_tube_volumes(activations.float(), weights.float(), tuple(x.shape[2:]), tau)
    return maps, targets.cpu().numpy()


@EXPLAINERS.register("cr-maps")
def explain_class_reg_maps(model: nn.Module, inputs: list[torch.Tensor], *, target: Any = None,
                           stream: str | None = None, layer: str | None = None, tau: float = 0.0) -> Explanation:
    """Explainer ``cr-maps``: the CR map of one regularised layer (``layer``, default the last), with each
    layer's peak frame in the values (Stergiou 2021 §6.3.3). One-stream models only (``stream`` is checked)."""
    streams = tuple(getattr(model, "streams", ("rgb",)))
    if len(streams) != 1 or (stream is not None and stream not in streams):
        raise ValueError(f"cr-maps explains one-stream models; {type(model).__name__} has streams {streams}"
                         + (f", asked for {stream!r}" if stream is not None else ""))
    maps, targets = class_reg_maps(model, inputs, target, tau=tau)
    name = layer or list(maps)[-1]
    if name not in maps:
        raise ValueError(f"cr-maps: layer {name!r} is not a Class Regularisation layer; choose from {list(maps)}")
    values = []
    for b, chosen in enumerate(targets):
        row: dict[str, Any] = {"target": int(chosen), "layer": name}
        for key, volume in maps.items():
            row[f"peak_frame[{key}]"] = int(np.unravel_index(int(volume[b].argmax()), volume[b].shape)[0])
        values.append(row)
    return Explanation(method="cr-maps", targets=targets.astype(np.int64), heatmaps=maps[name], values=values)
