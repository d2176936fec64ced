"""Multi-view testing: every video seen as T temporal clips × S spatial crops, the views' scores fused.

``evaluate --views TxS``:

* **temporal views** — T clips of the run's length spread over the video. With the run's uniform
  sampling (frames spread over the whole video) view k shifts every index by ``(k − (T−1)/2)/T`` of
  the spacing, so each view still covers the video and ``T = 1`` is the standard evaluation; with
  window sampling the T windows start at evenly spaced frames from the first to the last possible
  start (padded with the last frame when the video is shorter than one window).
* **spatial views** — every frame is first resized so its shorter side is ``resize`` (default: the
  crop size; for ten crops crop / 0.875, the 256 → 224 convention), then cropped to ``crop`` (default:
  the model's ``input_size`` or the frame size): ``1`` centre crop; ``2`` centre and its horizontal
  flip; ``3`` three crops along the longer side (start, centre, end); ``10`` four corners and the
  centre, each also flipped. Flipping negates the horizontal flow component.
* **fusion** — ``mean`` of the views' softmax scores, ``max`` per class, or ``vote`` (majority of the
  views' top classes; ``evaluate.aggregate``'s tie-break).

Presets: ``stergiou-30`` = 10 × 3 (Stergiou 2021 §4.4.1: 10 clips × 3 spatial crops, "30 views") and
``feichtenhofer-25`` = 25 × 2 (Feichtenhofer 2017 §4.3.5 and §5.4.2: 25 frame-chunks and their
horizontal flips, following Simonyan & Zisserman 2014; the thesis classifies the whole frame fully
convolutionally, here the centre crop of the model's size: docs/deviations.md).

Video-level results (one fused prediction per video); ``evaluations/<name>.json`` holds every
view's own accuracy, the single centre view's and each fusion's, and the full metrics of the chosen
fusion.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kinetoscope.evaluate.aggregate import aggregate_videos
from kinetoscope.evaluate.metrics import classification_metrics, score_metrics
from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text

SPATIAL = (1, 2, 3, 10)
FUSIONS = ("mean", "max", "vote")
PRESETS = {"stergiou-30": (10, 3), "feichtenhofer-25": (25, 2)}


def parse_views(text: str) -> tuple[int, int]:
    """``"TxS"`` or a preset name -> ``(T, S)``; errors name the accepted forms."""
    if text in PRESETS:
        return PRESETS[text]
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*", str(text).lower())
    if not match:
        raise ValueError(f"--views {text!r}: use TxS (e.g. 3x3, 10x3) or a preset: {', '.join(PRESETS)}")
    temporal, spatial = int(match.group(1)), int(match.group(2))
    if temporal < 1 or spatial not in SPATIAL:
        raise ValueError(f"--views {text!r}: T must be >= 1 and S one of {SPATIAL} (1 centre, 2 centre + flip, "
                         "3 three crops, 10 corners + centre with flips)")
    return temporal, spatial


def temporal_views(num_frames: int, frames: int, views: int, uniform: bool) -> list[np.ndarray]:
    """Frame indices of the ``views`` temporal clips of ``frames`` frames (module docstring)."""
    from kinetoscope.data.sampling import pad_indices, uniform_indices

    if uniform:
        base = uniform_indices(num_frames, frames).astype(np.float64)
        if frames >= num_frames or frames < 2:
            return [base.astype(np.int64)] * views
        spacing = (num_frames - 1) / (frames - 1)
        return [np.clip(np.round(base + (k - (views - 1) / 2) / views * spacing), 0, num_frames - 1).astype(np.int64)
                for k in range(views)]
    last_start = max(0, num_frames - frames)
    starts = np.linspace(0, last_start, views).round().astype(np.int64) if views > 1 else [last_start // 2]
    return [pad_indices(s + np.arange(frames), num_frames) for s in starts]


def spatial_boxes(height: int, width: int, crop: tuple[int, int], views: int) -> list[tuple[int, int, bool]]:
    """``(top, left, flip)`` of each spatial view on a frame of ``height × width``."""
    ch, cw = crop
    if ch > height or cw > width:
        raise ValueError(f"crop {crop} is larger than the resized frames {(height, width)}; lower --crop or "
                         "raise --resize")
    centre = ((height - ch) // 2, (width - cw) // 2)
    if views == 1:
        return [(*centre, False)]
    if views == 2:
        return [(*centre, False), (*centre, True)]
    if views == 3:
        if width >= height:
            return [(centre[0], 0, False), (*centre, False), (centre[0], width - cw, False)]
        return [(0, centre[1], False), (*centre, False), (height - ch, centre[1], False)]
    corners = [(0, 0), (0, width - cw), (height - ch, 0), (height - ch, width - cw), centre]
    return [(t, left, False) for t, left in corners] + [(t, left, True) for t, left in corners]


class ViewDataset(Dataset):
    """One item per (video, temporal view, spatial view): the clip of that view, as ``ClipDataset``
    returns clips (``video`` float ``[C, T, H, W]`` in [0, 1]; ``flow`` when asked)."""

    def __init__(self, store, records, *, frames: int | None, temporal: int, spatial: int, uniform: bool,
                 crop: tuple[int, int] | None, resize: int | None, flow: bool,
                 normalize: tuple[list[float], list[float]] | None = None) -> None:
        self.store, self.records, self.flow, self.normalize = store, records, flow, normalize
        self.temporal, self.spatial, self.resize, self.crop = temporal, spatial, resize, crop
        self.indices = []
        for record in records:
            array = store.read_frames(record.video_id)
            n = int(array.shape[0])
            self.indices.append(temporal_views(n, frames or n, temporal, uniform))
            del array
        self.items = [(v, t, s) for v in range(len(records)) for t in range(temporal) for s in range(spatial)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from kinetoscope.data.transforms import Resize

        v, t, s = self.items[i]
        record, idx = self.records[v], self.indices[v][t]
        video = torch.from_numpy(np.ascontiguousarray(self.store.read_frames(record.video_id)[idx]))
        video = video.permute(3, 0, 1, 2).float().div_(255.0)
        flow = None
        if self.flow:
            array = self.store.read_flow(record.video_id)
            flow = torch.from_numpy(np.ascontiguousarray(array[np.minimum(idx, array.shape[0] - 1)],
                                                         dtype=np.float32)).permute(3, 0, 1, 2)
        if self.resize:
            video, flow = Resize(self.resize)(video, flow)
        crop = self.crop or tuple(video.shape[-2:])
        top, left, flip = spatial_boxes(*video.shape[-2:], crop, self.spatial)[s]
        video = video[..., top : top + crop[0], left : left + crop[1]]
        if flow is not None:
            flow = flow[..., top : top + crop[0], left : left + crop[1]]
        if flip:
            video = video.flip(-1)
            if flow is not None:
                flow = flow.flip(-1)
                flow[0] = -flow[0]
        if self.normalize is not None:  # the run's normalisation, after the geometry (as evaluate applies it)
            mean, std = (torch.tensor(v, dtype=video.dtype).view(-1, 1, 1, 1) for v in self.normalize)
            video = (video - mean) / std
        sample = {"video": video.contiguous(), "label": 0, "video_id": record.video_id, "clip_index": t * 1000 + s}
        if flow is not None:
            sample["flow"] = flow.contiguous()
        return sample


def fuse(scores: np.ndarray, method: str) -> np.ndarray:
    """Fuse ``[V, views, K]`` view scores into ``[V, K]`` by ``mean``, ``max`` or ``vote``."""
    if method not in FUSIONS:
        raise ValueError(f"fusion={method!r}; expected one of {FUSIONS}")
    if method == "max":
        return scores.max(axis=1)
    videos, views, _ = scores.shape
    ids = [str(v) for v in range(videos) for _ in range(views)]
    return aggregate_videos(ids, scores.reshape(videos * views, -1), method=method)[1]


def evaluate_views(
    run_dir: str | Path,
    views: str = "3x3",
    fusion: str = "mean",
    data: str | Path | None = None,
    split: str | None = None,
    *,
    name: str | None = None,
    crop: int | None = None,
    resize: int | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Multi-view evaluation of a run (module docstring) on its validation split or ``data``/``split``.

    Writes ``evaluations/<name>.json`` (default name ``views-TxS`` or ``<dataset>-views-TxS``) and
    ``evaluations/<name>/video_predictions.csv`` (fused scores); returns the JSON's dict."""
    from kinetoscope.config import RunConfig
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.datamodule import normalization
    from kinetoscope.models.checkpoint import load_run_model
    from kinetoscope.models.inference import predict_batches

    temporal, spatial = parse_views(views)
    if fusion not in FUSIONS:
        raise ValueError(f"--fusion {fusion!r}; expected one of {FUSIONS}")
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir)
    model, spec = load_run_model(run_dir)
    classes = spec["classes"]
    d = config.data.model_dump()
    own = data is None
    root = Path(d["root"]) if own else Path(data)
    if own and split is None:
        split = d.get("val_split")
    store = DatasetStore(root)
    records = store.records(None if (own and d.get("val_subjects")) else split)
    if own and d.get("val_subjects"):
        wanted = {str(s) for s in d["val_subjects"]}
        records = [r for r in records if r.subject in wanted]
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({r.label for r in records if r.label not in index})
    if unknown:
        raise ValueError(f"{store.annotations_path}: label(s) {unknown} not among the run's classes {classes}")
    if not records:
        raise ValueError(f"no videos in split {split!r} of {store.annotations_path}")
    uniform = d.get("sampling") in (None, "uniform") and bool(d.get("frames"))
    size = d.get("size") or spec.get("options", {}).get("input_size")
    if isinstance(size, (list, tuple)):
        size = min(size)
    crop_size = (crop, crop) if crop else ((size, size) if size else None)
    if resize is None and crop_size is not None:
        resize = round(min(crop_size) / 0.875) if spatial == 10 else min(crop_size)
    dataset = ViewDataset(store, records, frames=d.get("frames"), temporal=temporal, spatial=spatial,
                          uniform=uniform, crop=crop_size, resize=resize,
                          flow="flow" in getattr(model, "streams", ("rgb",)),
                          normalize=normalization(config.data, int(store.meta().get("channels", 3))))
    out = predict_batches(model, DataLoader(dataset, batch_size=batch_size, shuffle=False))
    count = temporal * spatial
    scores = out["scores"].reshape(len(records), count, -1).astype(np.float64)
    labels = np.array([index[r.label] for r in records])

    def accuracy(s: np.ndarray) -> float:
        return float(np.mean(s.argmax(1) == labels))

    per_view = [{"temporal": k // spatial, "spatial": k % spatial, "accuracy": accuracy(scores[:, k])}
                for k in range(count)]
    centre = (temporal // 2) * spatial  # the middle clip, centre (first) crop: the single-view baseline
    fused = {method: fuse(scores, method) for method in FUSIONS}
    chosen = fused[fusion]
    metrics = classification_metrics(labels, chosen.argmax(1), classes)
    metrics.update(score_metrics(labels, chosen, classes))
    dataset_name = store.meta().get("name", root.name)
    label = f"{temporal}x{spatial}"
    name = name or (f"views-{label}" if own else f"{dataset_name}-views-{label}")
    metrics.update({
        "name": name, "dataset": str(root), "dataset_name": dataset_name, "split": split or "",
        "level": "video", "views": label, "temporal_views": temporal, "spatial_views": spatial,
        "fusion": fusion, "crop": list(crop_size) if crop_size else None, "resize": resize,
        "single_view_accuracy": per_view[centre]["accuracy"],
        "fused_accuracy": {method: accuracy(s) for method, s in fused.items()},
        "per_view": per_view,
    })
    rows = [[r.video_id, r.subject, r.label, classes[int(s.argmax())], *np.round(s, 6).tolist()]
            for r, s in zip(records, chosen, strict=True)]
    header = ["video_id", "subject", "label", "pred", *[f"score_{c}" for c in classes]]
    atomic_write_text(run_dir / "evaluations" / name / "video_predictions.csv", csv_text(header, rows))
    atomic_write_json(run_dir / "evaluations" / f"{name}.json", metrics)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("evaluations", {})[name] = {
        "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"], "views": label,
        "fusion": fusion, "single_view_accuracy": metrics["single_view_accuracy"]}
    atomic_write_json(summary_path, summary)
    return metrics


def views_table(metrics: dict[str, Any]):
    """A ``rich.table.Table``: single centre view vs each fusion, per-view accuracies."""
    from rich.table import Table

    table = Table(title=f"{metrics['name']}: {metrics['views']} views per video, {metrics['n']} videos")
    table.add_column("views")
    table.add_column("accuracy", justify="right")
    table.add_row("single (middle clip, centre crop)", f"{metrics['single_view_accuracy']:.3f}")
    for method, acc in metrics["fused_accuracy"].items():
        table.add_row(f"fused: {method}" + (" (chosen)" if method == metrics["fusion"] else ""), f"{acc:.3f}")
    per_view = [v["accuracy"] for v in metrics["per_view"]]
    table.add_row("each view: min / mean / max", f"{min(per_view):.3f} / {np.mean(per_view):.3f} / {max(per_view):.3f}")
    return table


__all__ = ["FUSIONS", "PRESETS", "evaluate_views", "fuse", "parse_views", "spatial_boxes", "temporal_views",
           "views_table"]
