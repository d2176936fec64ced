"""Spatiotemporal multiplier networks, MulNet (Feichtenhofer 2017 Ch. 5, Feichtenhofer et al. 2017a).

The cross-stream ResNet of :mod:`kinetoscope.models.st_resnet` with the **multiplicative** gate of
Eq. 5.3, ``x̂a_{l+1} = f(xa_l) + F(xa_l ⊙ f(xm_l))``: the appearance ``res{k}a`` pre-ReLU output times
the motion ``res{k}a`` ReLU output feeds the residual branch of the appearance ``res{k}b`` (*(code)*),
before the second unit of each stage. The appearance gradient is scaled by f(xm) and the motion
gradient by xa (second-order fusion).

Temporal filters keep feature identity (§5.3.3): ``x_{l+1} = x_l * (1 ⊗ f) + b`` with f = [0, 1, 0]
(exact no-op, default) or [1/3, 1/3, 1/3], b = 0
(:class:`~kinetoscope.layers.twostream.IdentityTemporalConv`).
With f = [0, 1, 0] the network at initialisation *is* its frame-wise counterpart — every chunk's
features equal those of the same network run on that chunk alone (tests/test_st_multiplier.py) — and
training learns how far to look across time. Placements (Table 5.3): ‡ after the 3x3 conv (and its
ReLU) of every stage's second unit (default, the best row), † the projection shortcut of each stage's
first unit, § the second unit of conv5 only. The head is a global temporal max pool after the spatial
average (Table 5.3: ‡ + [0,1,0] + time max-pool = 6.00% / 30.98% error), one classifier per stream,
scores averaged. Ch. 5's final model pairs a ResNet-50 appearance stream with a ResNet-152 motion
stream (``motion_depth=152``); the default keeps both at 50 layers (the ablation layout).

Parameters (num_classes = 101, L = 10, ‡): 2 x 23,714,981 (ResNet-50) + 53,312 (20-channel conv1) +
2 x 1,045,440 for the identity temporal filters (3·(64² + 128² + 256² + 512²) weights + 960 biases)
= 49,574,154 (the thesis gives no count).

Deviations: BatchNorm is ordinary (Ch. 5 gives no BN batch size; ``bn_sub_batch`` is available);
"dropout 0.8 after the final classification layer" (motion stream) is read as dropout on the pooled
features, off by default (see docs/deviations.md, 'ST-Multiplier dropout').
"""

from __future__ import annotations

from kinetoscope.models.st_resnet import CrossStreamResNet
from kinetoscope.registry import register_model


@register_model("st_multiplier")
def st_multiplier(
    num_classes: int = 101,
    in_channels: int = 3,
    flow_frames: int = 10,
    motion_depth: int = 50,
    placement: str = "after_3x3",
    temporal_init: str = "identity",
    temporal_pool: str = "global",
    bn_sub_batch: int | None = None,
    dropout: float = 0.0,
) -> CrossStreamResNet:
    """MulNet (Feichtenhofer 2017 Ch. 5): multiplicative motion -> appearance gates, identity-initialised temporal
    filters (``placement``: after_3x3 ‡ | shortcut † | conv5 § | none; ``temporal_init``: identity [0,1,0]
    | average [1/3,1/3,1/3]), global temporal max pool (``temporal_pool``: global | window | none)."""
    if placement not in ("after_3x3", "shortcut", "conv5", "none"):
        raise ValueError(f"placement {placement!r} must be one of after_3x3, shortcut, conv5, none")
    return CrossStreamResNet(
        num_classes, in_channels, 50, motion_depth, flow_frames, "multiply", placement,
        temporal_init, temporal_pool, bn_sub_batch, dropout,  # type: ignore[arg-type]
    )
