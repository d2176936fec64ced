"""Class Regularisation (CR) — Stergiou 2021 ch. 6, §6.3 and Algorithm 1.

Inputs: a layer's activations ``a [B, C, T, H, W]`` and the classifier's weight ``W [N, C']``, detached
(the values of the previous optimisation step; CR never changes the classifier's gradient, §6.3.2). A
learnable point-wise map ``C' -> C`` (``nn.Linear``, Kaiming-initialised, bias) brings the class weights
into the layer's feature space:

1. ``M = ReLU(W · Mapᵀ + b)`` — ``[N, C]``, once per forward;
2. ``ā = pool_st(a)`` — ``[B, C]``;
3. ``c_b = argmax_n Σ_c M[n, c] ā[b, c]`` — the class the layer's pooled features best describe, per sample,
   without labels (the same at train and test time). Algorithm 1 compares vectors (``Ŵ_n > Ŵ_c``);
   their sums are compared;
4. ``m̃ = λ + (1 - λ) · minmax(M[c_b])`` in ``[λ, 1]`` — Algorithm 1 prints
   ``λ (M - min)(1 - λ) / (max - min)``, whose range ``[0, λ(1 - λ)]`` would zero every activation at λ = 1,
   contradicting §6.4.1 ("λ = 1: no effect, λ -> 0: strongest"); this normalisation is used instead
   (see docs/deviations.md, 'Class Regularisation: normalisation and class choice'). A constant row (no class
   preference, e.g. all zero after the ReLU) gives ``m̃ = 1``;
5. return ``a ⊙ m̃`` (broadcast over T, H, W).

The map learns through the selected row only (no extra loss, §6.3.2). The affection rate λ falls with
depth: 0.9, 0.8, 0.7, 0.6 after the four stages (Table 6.1, :data:`AFFECTION_SCHEDULE`). Parameters per CR
``C'·C + C``.
"""

from __future__ import annotations

import torch
from torch import nn

AFFECTION_SCHEDULE = (0.9, 0.8, 0.7, 0.6)


class ClassRegularisation(nn.Module):
    """``forward(a [B, C, T, H, W], class_weight [N, C']) -> a ⊙ m̃`` (see the module docstring).

    ``last_class`` holds the class chosen per sample in the last forward, ``[B]``.
    """

    def __init__(self, channels: int, feature_dim: int, affection: float):
        super().__init__()
        if not 0 <= affection <= 1:
            raise ValueError(f"ClassRegularisation: affection={affection} must be in [0, 1] (1 = no effect)")
        self.channels = channels
        self.feature_dim = feature_dim
        self.affection = affection
        self.map = nn.Linear(feature_dim, channels)
        nn.init.kaiming_normal_(self.map.weight, nonlinearity="relu")
        nn.init.zeros_(self.map.bias)
        self.last_class: torch.Tensor | None = None

    def class_feature_weights(self, class_weight: torch.Tensor) -> torch.Tensor:
        """Step 1: ``W [N, C'] -> M = ReLU(Map(W)) [N, C]`` (``W`` detached here)."""
        if class_weight.ndim != 2 or class_weight.shape[1] != self.feature_dim:
            raise ValueError(
                f"ClassRegularisation: class_weight of shape {tuple(class_weight.shape)}; expected "
                f"[num_classes, {self.feature_dim}]"
            )
        return torch.relu(self.map(class_weight.detach().to(self.map.weight.dtype)))

    def forward(self, a: torch.Tensor, class_weight: torch.Tensor) -> torch.Tensor:
        if a.ndim < 3 or a.shape[1] != self.channels:
            raise ValueError(
                f"ClassRegularisation: activations of shape {tuple(a.shape)}; expected [B, {self.channels}, ...]"
            )
        class_features = self.class_feature_weights(class_weight)  # [N, C]
        pooled = a.flatten(2).mean(dim=2)  # [B, C]
        with torch.no_grad():
            chosen = (pooled.to(class_features.dtype) @ class_features.T).argmax(dim=1)  # [B]
        self.last_class = chosen
        rows = class_features[chosen]  # [B, C]
        low = rows.min(dim=1, keepdim=True).values
        span = rows.max(dim=1, keepdim=True).values - low
        flat = span <= torch.finfo(rows.dtype).tiny
        normalised = torch.where(flat, torch.ones_like(rows), (rows - low) / torch.where(flat, 1.0, span))
        scale = self.affection + (1 - self.affection) * normalised
        return a * scale.view(*scale.shape, *([1] * (a.ndim - 2))).to(a.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, feature_dim={self.feature_dim}, affection={self.affection}"
