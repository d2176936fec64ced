"""Classification metrics (scikit-learn) and the robustness ratio of Broomé 2022 §5.3.

``score_metrics`` adds what papers report from class scores: top-1 and top-5 accuracy (Stergiou 2021
Table 4.1 reports both), mean-class accuracy (the mean of per-class recalls), per-class precision and
recall, and for two classes the area under the ROC curve of the second class against the first.
"""

from __future__ import annotations

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


def score_metrics(labels: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Top-1/top-5 accuracy, mean-class accuracy, per-class precision and recall and, for a binary
    task, one-vs-rest AUROC (of ``classes[1]``; ``None`` when only one class occurs) from ``scores [N, K]``."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score, top_k_accuracy_score

    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    k = list(range(len(classes)))
    if not len(labels):
        return {}
    preds = scores.argmax(1)
    precision, recall, _, support = precision_recall_fscore_support(labels, preds, labels=k, zero_division=0)
    present = support > 0
    out: dict[str, Any] = {
        "top1": float(np.mean(preds == labels)),
        # with five classes or fewer the true class is always among the top five
        "top5": float(top_k_accuracy_score(labels, scores, k=5, labels=k)) if len(classes) > 5 else 1.0,
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "per_class_precision": {c: float(v) for c, v in zip(classes, precision, strict=True)},
        "per_class_recall": {c: float(v) for c, v in zip(classes, recall, strict=True)},
        "auroc": None,
    }
    if len(classes) == 2 and len(np.unique(labels)) == 2:
        out["auroc"] = float(roc_auc_score(labels, scores[:, 1]))
    return out


def robustness_ratio(target_accuracy: float, source_val_accuracy: float) -> float:
    """rr = target accuracy / best source validation accuracy (Broomé 2022 §5.3; higher = more robust).

    Undefined (NaN) when the source validation accuracy is 0.
    """
    if not source_val_accuracy:
        return float("nan")
    return float(target_accuracy) / float(source_val_accuracy)

