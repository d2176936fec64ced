"""``kinetoscope explain``: explain chosen clips of a trained run and write the files under
``RUN/explanations/`` (the run directory of docs/architecture.md).

For every clip: ``<method>/<clip>.npz`` (mask, heat-maps, target), one GIF with the panels of
Mänttäri 2020 Fig. 2 (original, Grad-CAM overlay, freeze-perturbed, mask timeline) and one PNG contact
sheet; for the call: ``statistics.json`` (per-method summaries of blob count/size/centre distance,
mask length, drop ratio/difference) and ``index.csv`` (one row per method and clip; rows for the
same method and clip are replaced when explained again). Methods are looked up in
``kinetoscope.registry.EXPLAINERS`` (every module of ``kinetoscope.explain`` is imported first, so a
new method only needs its ``@EXPLAINERS.register`` decorator; contract in ``explain/base.py``).

When no requested method produces heat-maps, Grad-CAM is computed as well for the overlay panel
(when the model names an ``explain_layer``), as in Mänttäri 2020 Fig. 2, which shows both.
"""

from __future__ import annotations

import base64
import csv
import html
import importlib
import io
import json
import pkgutil
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.registry import EXPLAINERS
from kinetoscope.utils import atomic_write_bytes, atomic_write_json, atomic_write_text

INDEX_COLUMNS = [
    "method", "video_id", "clip_index", "label", "target", "target_name", "original_score", "freeze_score",
    "reverse_score", "mask_length", "drop_ratio", "drop_difference", "blob_count", "blob_size",
    "centre_distance", "gif", "sheet", "arrays", "mask", "protocol", "iterations",
]


def load_explainers() -> list[str]:
    """Import every module of ``kinetoscope.explain`` (registering its explainers); return the names."""
    import kinetoscope.explain as package

    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"kinetoscope.explain.{info.name}")
    return EXPLAINERS.names()


def _methods(method: str | Sequence[str]) -> list[str]:
    names = [m.strip() for m in method.split(",")] if isinstance(method, str) else list(method)
    available = load_explainers()
    if names == ["all"]:
        names = [m for m in ("temporal-mask", "gradcam") if m in available]
    for name in names:
        EXPLAINERS.get(name)  # raises naming the valid explainers
    return names


def _split_options(methods: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    per_method: dict[str, dict[str, Any]] = {m: {} for m in methods}
    used = set()
    for name in methods:
        known = EXPLAINERS.options(name)
        for key, value in options.items():
            if key in known or EXPLAINERS.accepts_any(name):
                per_method[name][key] = value
                used.add(key)
    unknown = sorted(set(options) - used)
    if unknown:
        takes = {m: [k for k in EXPLAINERS.options(m) if k not in ("model", "inputs", "target", "stream")]
                 for m in methods}
        raise ValueError(f"explain: option(s) {', '.join(map(repr, unknown))} taken by none of {methods}; "
                         f"they take {takes}")
    return per_method


def _pick_clips(dataset, clips: int | Sequence[str]) -> list[int]:
    """Clip positions: N clips taken round-robin over classes (first clips of each class first), or
    the first clip of each named video."""
    if isinstance(clips, int):
        by_class: dict[int, list[int]] = {}
        for i, label in enumerate(dataset.labels):
            by_class.setdefault(label, []).append(i)
        order: list[int] = []
        queues = [by_class[k] for k in sorted(by_class)]
        while len(order) < min(clips, len(dataset)):
            for queue in queues:
                if queue and len(order) < clips:
                    order.append(queue.pop(0))
        return order
    wanted = list(clips)
    first: dict[str, int] = {}
    for i, clip in enumerate(dataset.clips):
        first.setdefault(dataset.records[clip.video_index].video_id, i)
    missing = [v for v in wanted if v not in first]
    if missing:
        raise KeyError(f"video id(s) {missing} not in the chosen split ({len(first)} videos, e.g. "
                       f"{', '.join(list(first)[:5])})")
    return [first[v] for v in wanted]


def _unnormalised(dataset: Any, clip: Any, rgb: bool) -> np.ndarray:
    """A clip ``[C, T, H, W]`` (tensor or array) as the eye should see it: for the RGB stream, the
    dataset's standardisation undone; flow stays as it is."""
    from kinetoscope.data.transforms import Normalize

    clip = np.asarray(clip.detach().cpu() if hasattr(clip, "detach") else clip, dtype=np.float32)
    steps = getattr(dataset.transform, "transforms", [])
    norm = next((t for t in steps if isinstance(t, Normalize)), None)
    if not rgb or norm is None:
        return clip
    return clip * norm.std.numpy() + norm.mean.numpy()


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _read_index(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def read_index(explanations_dir: str | Path) -> list[dict[str, str]]:
    """The rows of ``<explanations_dir>/index.csv`` (empty when there is none)."""
    return _read_index(Path(explanations_dir) / "index.csv")


def _write_index(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in INDEX_COLUMNS})
    atomic_write_text(path, buffer.getvalue())


def explain_run(
    run_dir: str | Path,
    method: str | Sequence[str] = "temporal-mask",
    clips: int | Sequence[str] = 4,
    split: str | None = None,
    data: str | Path | None = None,
    out: str | Path | None = None,
    *,
    stream: str | None = None,
    target: str = "predicted",
    render: bool = True,
    accelerator: str = "auto",
    mp4: bool = False,
    **options: Any,
) -> Path:
    """Explain ``clips`` of a run's validation split (or ``split`` of ``data``) with ``method`` (a
    registered explainer name, a comma-separated list, or ``"all"``); returns the explanations dir.

    ``target="predicted"`` explains the predicted class, ``"label"`` the ground truth. ``options``
    go to the methods that take them (e.g. ``iterations``, ``perturbation``, ``layer``,
    ``time_pooled_weights``); an option no method takes is an error. ``mp4`` also writes each
    rendered explanation as ``<method>/<clip>.mp4`` beside its GIF.
    """
    import torch
    from torch.utils.data import default_collate

    from kinetoscope.config import RunConfig
    from kinetoscope.data.datamodule import config_dataset
    from kinetoscope.device import resolve_device, to_device
    from kinetoscope.explain.base import model_streams, stream_index
    from kinetoscope.explain.stats import blob_statistics, clip_statistics
    from kinetoscope.models.checkpoint import load_run_model
    from kinetoscope.models.inference import model_inputs
    from kinetoscope.utils import progress

    run_dir = Path(run_dir)
    from kinetoscope.models.checkpoint import run_task

    if run_task(run_dir) == "detect_track":  # object detection: draw the tubes
        from kinetoscope.explain.detections import explain_detect_track

        return explain_detect_track(run_dir, clips if isinstance(clips, int) else list(clips), out=out)
    methods = _methods(method)
    per_method = _split_options(methods, options)
    if target not in ("predicted", "label"):
        raise ValueError(f"target={target!r}; expected 'predicted' or 'label'")
    device = resolve_device(accelerator)
    config = RunConfig.load(run_dir)
    model, spec = load_run_model(run_dir, device=device)
    flow = "flow" in model_streams(model)
    if data is None and split is None:  # the run's validation part: its subjects or its split
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow)
    elif data is None:
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow, split=split)
    else:
        dataset = config_dataset(config, "val", classes=spec["classes"], flow=flow, root=data, split=split)
    positions = _pick_clips(dataset, clips)
    batch = to_device(default_collate([dataset[i] for i in positions]), device)
    inputs = model_inputs(model, batch)
    labels = torch.as_tensor(batch["label"])
    chosen_target = labels if target == "label" else None
    x = inputs[stream_index(model, stream)]
    rgb = model_streams(model)[stream_index(model, stream)] == "rgb"

    explanations = {}
    for name in progress(methods, description=f"explain {len(positions)} clip(s)"):
        explainer = EXPLAINERS.get(name)
        explanations[name] = explainer(model, inputs, target=chosen_target, stream=stream, **per_method[name])
    heatmap_method = next((n for n, e in explanations.items() if e.heatmaps is not None), None)
    heatmaps = explanations[heatmap_method].heatmaps if heatmap_method else None
    if heatmaps is None and getattr(model, "explain_layer", None) and render:
        heatmap_method = "gradcam"
        heatmaps = EXPLAINERS.get("gradcam")(model, inputs, target=chosen_target, stream=stream).heatmaps
    heatmap_title = {"gradcam": "Grad-CAM", "saliency-tubes": "saliency tube", "cfp": "CFP"}.get(
        heatmap_method or "", heatmap_method or "")
    # methods that synthesise a clip without a mask (activation maximisation) get a panel of their own
    synthesised = {n: e for n, e in explanations.items() if e.perturbed is not None and e.mask is None}
    mask_source = next((e for e in explanations.values() if e.mask is not None), None)

    out_dir = Path(out) if out is not None else run_dir / "explanations"
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = spec["classes"]
    new_rows: list[dict[str, Any]] = []
    for b, position in enumerate(positions):
        clip = dataset.clips[position]
        video_id = dataset.records[clip.video_index].video_id
        clip_index = int(batch["clip_index"][b]) if "clip_index" in batch else 0
        stem = _safe(f"{video_id}_{clip_index}")
        gif = sheet = ""
        if render:
            from kinetoscope.explain.render import contact_sheet, display_frames, overlay_heatmap, render_gif

            frames = display_frames(_unnormalised(dataset, x[b], rgb))
            panels = [("original", frames)]
            if heatmaps is not None:
                panels.append((heatmap_title, overlay_heatmap(frames, heatmaps[b])))
            mask = None
            if mask_source is not None:
                mask = mask_source.mask[b]
                if mask_source.perturbed is not None:
                    panels.append(("freeze", display_frames(_unnormalised(dataset, mask_source.perturbed[b], rgb))))
            for name, explanation in synthesised.items():
                panels.append((name, display_frames(_unnormalised(dataset, explanation.perturbed[b], rgb))))
            first = next(iter(explanations.values()))
            caption = f"label {classes[int(labels[b])]}, target {classes[int(first.targets[b])]}"
            values = first.values[b] if first.values else {}
            if "original_score" in values:
                caption += (f"  OS {values['original_score']:.2f} FS {values['freeze_score']:.2f} "
                            f"RS {values['reverse_score']:.2f}")
            tag = "+".join(methods)
            gif = f"{_safe(tag)}/{stem}.gif"
            sheet = f"{_safe(tag)}/{stem}.png"
            render_gif(out_dir / gif, panels, mask, caption)
            if mp4:  # the same three-panel animation as MP4, beside the GIF
                from kinetoscope.explain.render import render_mp4

                render_mp4(out_dir / f"{_safe(tag)}/{stem}.mp4", panels, mask, caption)
            contact_sheet(out_dir / sheet, panels, mask, caption)
        blobs = blob_statistics(heatmaps[b]) if heatmaps is not None else {}
        for name, explanation in explanations.items():
            arrays = f"{_safe(name)}/{stem}.npz"
            buffer = io.BytesIO()
            payload = {"target": np.asarray(explanation.targets[b])}
            if explanation.mask is not None:
                payload["mask"] = explanation.mask[b]
            if explanation.heatmaps is not None:
                payload["heatmaps"] = explanation.heatmaps[b].astype(np.float16)
            if explanation.perturbed is not None:
                payload["perturbed"] = np.asarray(explanation.perturbed[b]).astype(np.float16)
            np.savez_compressed(buffer, **payload)
            atomic_write_bytes(out_dir / arrays, buffer.getvalue())
            values = dict(explanation.values[b]) if explanation.values else {}
            row = {
                "method": name, "video_id": video_id, "clip_index": clip_index, "label": classes[int(labels[b])],
                "target": int(explanation.targets[b]), "target_name": classes[int(explanation.targets[b])],
                "gif": gif, "sheet": sheet, "arrays": arrays, **values,
            }
            if explanation.heatmaps is not None or name == "temporal-mask":
                row.update(blobs)
            new_rows.append(row)

    index_path = out_dir / "index.csv"
    keep = {(r["method"], r["video_id"], str(r["clip_index"])) for r in new_rows}
    rows = [r for r in _read_index(index_path) if (r["method"], r["video_id"], r["clip_index"]) not in keep]
    rows += new_rows
    _write_index(index_path, rows)
    summary = {
        "run": str(run_dir), "model": spec["name"], "classes": classes, "split": split,
        "data": str(config.data.root if data is None else data), "stream": stream, "target": target,
        "methods": {m: clip_statistics([r for r in rows if r["method"] == m])
                    for m in sorted({r["method"] for r in rows})},
    }
    atomic_write_json(out_dir / "statistics.json", summary)
    return out_dir


def _data_uri(path: Path) -> str:
    kind = "gif" if path.suffix.lower() == ".gif" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _number(value: str, digits: int = 3) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value or "–"))
    if number != number:  # NaN
        return "–"
    return f"{number:.{digits}f}" if not number.is_integer() else f"{int(number)}"


def mask_protocol_notes(rows: Sequence[dict[str, str]]) -> list[str]:
    """``<p>`` lines naming the protocol(s) the temporal masks in ``rows`` (``index.csv``) were learned with."""
    from kinetoscope.explain.temporal_mask import protocol_label

    protocols: dict[str, int] = {}  # protocol -> iterations (early-stop rows differ: the largest)
    for row in rows:
        if row.get("method") == "temporal-mask":
            protocol = row.get("protocol") or "unrecorded"
            protocols[protocol] = max(protocols.get(protocol, 0), int(float(row.get("iterations") or 0)))
    return [f"<p class='muted'>Temporal masks: {html.escape(protocol_label(p, n))}.</p>" for p, n in protocols.items()]


def explanations_section(run_dir: str | Path, max_clips: int = 8) -> str:
    """An HTML snippet for ``report.html``: per-method statistics and the first ``max_clips`` clip
    animations (GIFs as data URIs). Empty string when the run has no explanations."""
    out_dir = Path(run_dir) / "explanations"
    rows = _read_index(out_dir / "index.csv")
    if not rows:
        return ""
    stats = json.loads((out_dir / "statistics.json").read_text()) if (out_dir / "statistics.json").is_file() else {}
    parts = ["<h3>Explanations</h3>"]
    parts += mask_protocol_notes(rows)
    methods = stats.get("methods", {})
    if methods:
        names = sorted({k for v in methods.values() for k in v})
        head = "".join(f"<th>{html.escape(n.replace('_', ' '))}</th>" for n in names)
        body = ""
        for method, values in methods.items():
            cells = ""
            for n in names:
                s = values.get(n)
                cells += "<td>–</td>" if not s or not s.get("n") else (
                    f"<td>{_number(s['mean'])}" + ("" if s.get("std") != s.get("std") else
                                                    f" ± {_number(s['std'])}") + f" (n={s['n']})</td>")
            body += f"<tr><td>{html.escape(method)}</td>{cells}</tr>"
        parts.append(f"<table><thead><tr><th>method</th>{head}</tr></thead><tbody>{body}</tbody></table>")
    by_clip: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:  # one animation per clip; prefer the one with the temporal mask strip
        key = (row["video_id"], row["clip_index"])
        if row.get("gif") and (out_dir / row["gif"]).is_file():
            if key not in by_clip or (row.get("mask_length") and not by_clip[key].get("mask_length")):
                by_clip[key] = row
    figures = []
    for row in list(by_clip.values())[:max_clips]:
        caption = f"{row['video_id']}: {row['label']} → {row['target_name']}"
        if row.get("mask_length"):
            caption += f", mask length {row['mask_length']}, OS {_number(row.get('original_score'), 2)}, " \
                       f"FS {_number(row.get('freeze_score'), 2)}, RS {_number(row.get('reverse_score'), 2)}"
        figures.append(f"<figure><img alt='{html.escape(caption)}' src='{_data_uri(out_dir / row['gif'])}'>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<div class='explanations' style='display:flex;flex-wrap:wrap;gap:1rem'>"
                 + "".join(figures) + "</div>")
    return "\n".join(parts)
