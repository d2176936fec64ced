"""Classification metrics (scikit-learn) and the robustness ratio of seed 000 [T] §5.3."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def classification_metrics(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows = true, columns = predicted)."""
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    k = list(range(len(classes)))
    per_class = f1_score(labels, preds, labels=k, average=None, zero_division=0)
    return {
        "n": int(len(labels)),
        "accuracy": float(accuracy_score(labels, preds)) if len(labels) else float("nan"),
        "macro_f1": float(f1_score(labels, preds, labels=k, average="macro", zero_division=0)),
        "per_class_f1": {c: float(v) for c, v in zip(classes, per_class, strict=True)},
        "confusion": confusion_matrix(labels, preds, labels=k).tolist(),
        "classes": list(classes),
    }


def robustness_ratio(target_accuracy: float, source_val_accuracy: float) -> float:
    """rr = target accuracy / best source validation accuracy ([T] §5.3; higher = more robust).

    Undefined (NaN) when the source validation accuracy is 0.
    """
    if not source_val_accuracy:
        return float("nan")
    return float(target_accuracy) / float(source_val_accuracy)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
