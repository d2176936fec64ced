"""Matplotlib figures of a run: training curves, cross-domain bars (confusion matrices: ``evaluate.plots``)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from kinetoscope.utils import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def read_metrics_csv(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns: dict[str, list[float]] = {}
    for key in rows[0].keys() if rows else []:
        columns[key] = [float(r[key]) if r[key] not in ("", None) else np.nan for r in rows]
    return columns


def training_curves(runs: dict[str, Path], path: Path) -> Path:
    """Loss and validation accuracy per epoch for one or more runs (``{label: metrics.csv}``)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, csv_path in runs.items():
        m = read_metrics_csv(csv_path)
        if not m:
            continue
        epochs = np.asarray(m["epoch"]) + 1
        (line,) = ax_loss.plot(epochs, m["train_loss"], label=f"{label} train")
        ax_loss.plot(epochs, m["val_loss"], "--", color=line.get_color(), label=f"{label} val")
        ax_acc.plot(epochs, m["train_acc"], color=line.get_color(), alpha=0.5, label=f"{label} train")
        ax_acc.plot(epochs, m["val_acc"], "--", color=line.get_color(), label=f"{label} val")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def domain_bars(table: dict[str, dict[str, float]], path: Path, chance: float | None = None) -> Path:
    """Grouped bars: accuracy of each model (``table[model][column]``) per evaluation column."""
    models = list(table)
    columns = list(dict.fromkeys(c for m in models for c in table[m]))
    x = np.arange(len(columns))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(1.4 * len(columns) + 2, 3.4))
    for k, model in enumerate(models):
        values = [table[model].get(c, np.nan) for c in columns]
        ax.bar(x + k * width - 0.4 + width / 2, values, width, label=model)
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", label="chance")
    ax.set_xticks(x, columns, fontsize=8)
    ax.set(ylabel="accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
