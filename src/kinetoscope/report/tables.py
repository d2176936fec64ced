"""Rich tables for the terminal."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def metrics_table(metrics: dict[str, Any]) -> Table:
    """Headline metrics, per-class F1 (precision, recall) and the confusion matrix of one evaluation."""
    title = f"{metrics.get('name', '')}: {metrics.get('dataset_name', '')}" + (
        " (reversed)" if metrics.get("reverse") else ""
    )
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("clips", str(metrics["n"]))
    table.add_row("accuracy", f"{metrics['accuracy']:.3f}")
    table.add_row("macro-F1", f"{metrics['macro_f1']:.3f}")
    for key, label in (("top5", "top-5 accuracy"), ("mean_class_accuracy", "mean-class accuracy"),
                       ("auroc", f"AUROC ({metrics['classes'][-1]} vs rest)")):
        if metrics.get(key) is not None:
            table.add_row(label, f"{metrics[key]:.3f}")
    if metrics.get("rr") is not None:
        table.add_row("rr (target acc / best source val acc)", f"{metrics['rr']:.3f}")
    precision, recall = metrics.get("per_class_precision", {}), metrics.get("per_class_recall", {})
    for cls, f1 in metrics["per_class_f1"].items():
        extra = f"  (P {precision[cls]:.3f}, R {recall[cls]:.3f})" if cls in precision and cls in recall else ""
        table.add_row(f"F1 {cls}", f"{f1:.3f}{extra}")
    classes = metrics["classes"]
    table.add_row("confusion (rows true)", "")
    for cls, row in zip(classes, metrics["confusion"], strict=True):
        table.add_row(f"  {cls}", " ".join(f"{v:4d}" for v in row))
    return table


def detection_table(metrics: dict[str, Any]) -> Table:
    """Frame mAP of a Detect & Track evaluation: detection alone vs after tube linking, per class."""
    table = Table(title=f"{metrics.get('name', '')}: {metrics.get('dataset', '')} ({metrics.get('frames_scored')} "
                        "frames, mAP@0.5)", show_header=True)
    table.add_column("")
    table.add_column("detection", justify="right")
    table.add_column("D&T linked", justify="right")
    table.add_row("mAP", f"{metrics['map_detection']:.3f}", f"{metrics['map_linked']:.3f}")
    for cls, ap in metrics["ap_detection"].items():
        table.add_row(f"AP {cls}", f"{ap:.3f}", f"{metrics['ap_linked'][cls]:.3f}")
    table.add_row("mAP, linking without tracklets", "", f"{metrics['map_linked_without_tracks']:.3f}")
    return table
