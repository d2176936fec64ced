"""``kinetoscope evaluate``: a finished run on a dataset (its own validation split by default,
another domain with ``data``), optionally with every clip's frames reversed.

Writes, atomically, under the run directory:
- own validation split, forward: ``predictions.csv`` and ``video_predictions.csv``
- anything else: ``evaluations/<name>/predictions.csv`` and ``video_predictions.csv``
- always: ``evaluations/<name>.json`` (metrics, rr), ``evaluations/<name>_confusion.png`` and the
  ``evaluations`` entry of ``summary.json``
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.evaluate.aggregate import AGGREGATIONS, aggregate_videos
from kinetoscope.evaluate.metrics import classification_metrics, robustness_ratio, score_metrics
from kinetoscope.evaluate.plots import confusion_plot
from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text


def predict_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str | None = None,
    reverse: bool = False,
    name: str | None = None,
    batch_size: int = 64,
    aggregation: str = "mean",
    *,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Evaluate a run; returns the metrics dict that is also written to ``evaluations/<name>.json``.

    Clips come from the run's own data pipeline (``kinetoscope.data.datamodule.config_dataset``): its
    validation part (split or subjects) by default, or ``split`` of another dataset ``data``, with the
    run's deterministic evaluation transform. The model runs on ``accelerator``."""
    from torch.utils.data import DataLoader

    from kinetoscope.config import RunConfig
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.datamodule import config_dataset
    from kinetoscope.device import resolve_device
    from kinetoscope.models.checkpoint import load_run_model, run_task
    from kinetoscope.models.inference import predict_batches
    from kinetoscope.utils import progress

    if run_task(run_dir) == "detect_track":  # object detection: frame mAP, tubes
        from kinetoscope.evaluate.detect_track import evaluate_detect_track

        return evaluate_detect_track(run_dir, data=data, split=split, name=name)
    if aggregation not in AGGREGATIONS:  # before the model runs over the whole dataset
        raise ValueError(f"aggregation={aggregation!r}; expected one of {AGGREGATIONS}")
    device = resolve_device(accelerator)
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir)
    model, spec = load_run_model(run_dir, device=device)
    own_data = data is None
    root = Path(config.data.root) if own_data else Path(data)
    if split is None and own_data:
        split = config.data.val_split
    store = DatasetStore(root)
    dataset_name = store.meta().get("name", root.name)
    if name is None:
        name = ("val" if own_data else dataset_name) + ("-reversed" if reverse else "")
    flow = "flow" in getattr(model, "streams", ("rgb",))
    if own_data and split == config.data.val_split:
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow, reverse=reverse)
    else:
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow, reverse=reverse,
                                 root=root, split=split)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=config.data.num_workers)
    batches = progress(loader, total=len(loader), description=f"evaluate {name}")
    out = predict_batches(model, batches)  # inference mode
    classes = spec["classes"]
    preds = out["scores"].argmax(1)
    metrics = classification_metrics(out["labels"], preds, classes)
    metrics.update(score_metrics(out["labels"], out["scores"], classes))  # top-5, mean-class, P/R, AUROC

    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    source_val = summary.get("best_val_acc")
    metrics.update({
        "name": name,
        "dataset": str(root),
        "dataset_name": dataset_name,
        "domain": store.meta().get("domain", ""),
        "split": split or "",
        "reverse": reverse,
        "source_val_acc": source_val,
        "rr": robustness_ratio(metrics["accuracy"], source_val) if source_val else None,
    })

    clip_rows = [
        [vid, subj, int(ci), classes[int(lab)], classes[int(p)], *np.round(sc, 6).tolist()]
        for vid, subj, ci, lab, p, sc in zip(out["video_id"], out["subject"], out["clip_index"],
                                             out["labels"], preds, out["scores"], strict=True)
    ]
    header = ["video_id", "subject", "clip_index", "label", "pred", *[f"score_{c}" for c in classes]]
    vids, vscores = aggregate_videos(out["video_id"], out["scores"], method=aggregation)
    first = {}
    for vid, lab, subj in zip(out["video_id"], out["labels"], out["subject"], strict=True):
        first.setdefault(vid, (lab, subj))
    video_rows = [[vid, first[vid][1], classes[int(first[vid][0])], classes[int(s.argmax())],
                   *np.round(s, 6).tolist()] for vid, s in zip(vids, vscores, strict=True)]
    video_labels = np.array([first[v][0] for v in vids])
    metrics["video"] = classification_metrics(video_labels, vscores.argmax(1), classes) if vids else {}
    metrics["video"]["aggregation"] = aggregation
    vheader = ["video_id", "subject", "label", "pred", *[f"score_{c}" for c in classes]]

    target = run_dir if (own_data and not reverse and name == "val") else run_dir / "evaluations" / name
    atomic_write_text(target / "predictions.csv", csv_text(header, clip_rows))
    atomic_write_text(target / "video_predictions.csv", csv_text(vheader, video_rows))
    atomic_write_json(run_dir / "evaluations" / f"{name}.json", metrics)
    confusion_plot(metrics, run_dir / "evaluations" / f"{name}_confusion.png", title=f"{name} (clips)")

    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("evaluations", {})[name] = {
        k: metrics[k] for k in ("accuracy", "macro_f1", "rr", "reverse", "domain", "n")
    }
    atomic_write_json(summary_path, summary)
    return metrics
