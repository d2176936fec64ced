"""Figures that ``evaluate`` writes itself (the report reuses them): the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.utils import atomic_path


def confusion_plot(metrics: dict[str, Any], path: Path, title: str = "") -> Path:
    """The confusion matrix of ``metrics`` (``confusion`` rows = true, ``classes``) as a PNG: counts in
    the cells, colour = share of the true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(metrics["confusion"], dtype=float)
    classes = metrics["classes"]
    norm = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = max(3.8, 0.35 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title or metrics.get("name", ""))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
