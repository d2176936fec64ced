"""``kinetoscope suite appearance-free``: accuracy on RGB vs appearance-free videos, per model, with Δ.

Ilic 2024 Ch. 4, Table 4.1 and §4.4:

1. make the appearance-free version of a dataset (:func:`kinetoscope.synth.appearance_free.
   make_appearance_free_dataset`; same videos, labels and splits) unless one is given;
2. **leakage probe**: a single-frame classifier (scikit-learn logistic regression on the pixels of
   single frames, standardised) trained on frames of the training split and tested on frames of the
   evaluation split, once on RGB and once on appearance-free frames. The thesis uses a single-frame
   ResNet50 (65.6 % UCF101 vs 1.1 % AFD101, chance 0.99 %); the point is the same: appearance-free
   frames must be at chance. Reported with a 95 % Clopper–Pearson interval and a two-sided binomial
   test against chance (the largest class share of the test frames);
3. train every model on each version (one run per (model, version)) and test it on that version's
   evaluation split;
4. ``report.html`` with the Table 4.1 layout: model, f×r, RGB, appearance-free, Δ = RGB − AF.

Runs resume: a run with ``model.safetensors`` and its ``val`` evaluation is not trained again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text

TRAIN_DEFAULTS: dict[str, Any] = {"max_epochs": 10, "patience": 4, "batch_size": 16, "lr": 3e-3,
                                  "weight_decay": 1e-5, "optimizer": "adam"}


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]appearance-free[/] {message}", highlight=False)


def _frames_of(store: Any, records: list[Any], per_video: int, size: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    classes = store.classes
    features, labels = [], []
    for record in records:
        video = store.read_frames(record.video_id)
        picks = rng.choice(len(video), size=min(per_video, len(video)), replace=False)
        for t in sorted(picks):
            frame = np.asarray(video[t])
            h, w = frame.shape[:2]
            scale = min(1.0, size / max(h, w))
            if scale < 1.0:
                frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))),
                                   interpolation=cv2.INTER_AREA)
            features.append(frame.reshape(-1).astype(np.float32) / 255.0)
            labels.append(classes.index(record.label))
    return np.stack(features), np.asarray(labels)


def single_frame_probe(
    root: str | Path,
    train_split: str = "train",
    test_split: str = "val",
    frames_per_video: int = 4,
    size: int = 32,
    seed: int = 0,
    test_frames_per_video: int = 1,
) -> dict[str, Any]:
    """The leakage probe (Ilic 2024 §4.4): can a single frame tell the class?

    Logistic regression (scikit-learn, standardised pixels; frames downscaled so the longer side is
    at most ``size`` px) on ``frames_per_video`` random frames of each training video, tested on
    ``test_frames_per_video`` random frames (default 1) of each test video — frames of one video share
    their noise frame, so one frame per video keeps the binomial test's samples independent.
    Returns ``{accuracy, chance, n_test, n_train, ci_low, ci_high, p_value, classifier}``; ``chance``
    is the largest class share among the test frames."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.evaluate.leakage import probe_statistics

    store = DatasetStore(root)
    train = store.records(train_split)
    test = store.records(test_split)
    if not train or not test:
        splits = sorted({r.split for r in store.records()})
        raise ValueError(f"{store.annotations_path}: split {train_split!r} has {len(train)} videos and "
                         f"{test_split!r} has {len(test)}; both need videos (splits present: {splits})")
    rng = np.random.default_rng(seed)
    x_train, y_train = _frames_of(store, train, frames_per_video, size, rng)
    x_test, y_test = _frames_of(store, test, test_frames_per_video, size, rng)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    classifier.fit(x_train, y_train)
    return {**probe_statistics(y_test, classifier.predict(x_test)), "n_train": int(len(y_train)),
            "classifier": "logistic regression on pixels", "dataset": str(store.root)}


def _differs(requested: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether any value of ``requested`` (nested) differs from the same key of a run's stored config."""
    for key, value in requested.items():
        if isinstance(value, dict):
            if not isinstance(stored.get(key), dict) or _differs(value, stored[key]):
                return True
        elif stored.get(key) != value:
            return True
    return False


def train_suite_run(out_dir: Path, name: str, data_root: Path, model: str, options: dict[str, Any],
                    train: dict[str, Any], seed: int) -> Path:
    """Train (or resume, or reuse) ``out_dir/runs/<name>``: ``model`` with ``options`` on ``data_root``
    with the ``train`` settings (keys of :data:`TRAIN_DEFAULTS`), evaluated on its validation split.
    A finished run with the same settings is reused; one with other settings is retrained."""
    from kinetoscope.config import RunConfig, build_config
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.train import fit

    run_dir = out_dir / "runs" / name
    requested = {
        "data": {"root": str(data_root), "batch_size": train["batch_size"]},
        "model": {"name": model, **options},
        "optim": {"name": train["optimizer"], "lr": train["lr"], "weight_decay": train["weight_decay"]},
        "train": {"max_epochs": train["max_epochs"], "patience": train["patience"], "seed": seed},
    }
    config = build_config({"name": name, "out_dir": str(out_dir / "runs"), **requested,
                           "train": {**requested["train"], "progress": False}})
    if (run_dir / "config.yaml").is_file() and _differs(requested, RunConfig.load(run_dir).model_dump(mode="json")):
        _log(f"{name}: the data, model, seed or training settings changed since it was trained; retraining")
        fit(config, overwrite=True)
    elif not ((run_dir / "model.safetensors").is_file() and (run_dir / "summary.json").is_file()):
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
        _log(f"training {name}" + (" (resuming)" if resume else ""))
        fit(config, overwrite=not resume, resume=resume)
    elif "val" in json.loads((run_dir / "summary.json").read_text()).get("evaluations", {}):
        return run_dir  # finished with these settings
    predict_run(run_dir)
    return run_dir


def run_appearance_free_suite(
    data: str | Path,
    out_dir: str | Path = "runs/appearance-free",
    models: Sequence[str] = ("cnn3d", "convlstm"),
    af_data: str | Path | None = None,
    model_options: dict[str, dict[str, Any]] | None = None,
    train: dict[str, Any] | None = None,
    flow_method: str = "auto",
    mode: str = "first-frame",
    placement: str = "splat",
    grayscale: bool = False,
    probe_frames: int = 4,
    network_probe: bool = False,
    probe_options: dict[str, Any] | None = None,
    seed: int = 0,
) -> Path:
    """Run (or resume) the RGB vs appearance-free comparison; returns the path of ``report.html``.

    ``data``: an RGB dataset with train/val splits. ``af_data``: its appearance-free version
    (default: generated into ``out_dir/data/appearance-free`` with ``flow_method``, ``mode``,
    ``placement``, ``grayscale``). ``model_options``: per-model options (e.g. ``{"cnn3d": {"hidden":
    8}}``); ``train``: overrides of :data:`TRAIN_DEFAULTS`. Re-running resumes: a finished run with the
    same data, model options, seed and training settings is reused, one whose settings changed is
    retrained, and the single-frame probe is repeated when its data or settings changed.

    ``network_probe``: also run the single-frame network probe of Ilic 2024 §4.4
    (:func:`kinetoscope.evaluate.leakage.frame_network_probe`, a 2D ResNet; ``probe_options`` e.g.
    ``{"depth": 18, "epochs": 10}``) on RGB frames, appearance-free frames and flow images."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.report.html import build_report
    from kinetoscope.report.suites import appearance_free_section
    from kinetoscope.synth.appearance_free import make_appearance_free_dataset

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rgb_root = Path(data)
    unknown = sorted(set(train or {}) - set(TRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown train setting(s) {unknown}; accepted: {', '.join(TRAIN_DEFAULTS)}")
    stray = sorted(set(model_options or {}) - set(models))
    if stray:  # e.g. {"hidden": 8} instead of {"cnn3d": {"hidden": 8}} would otherwise be ignored
        raise ValueError(f"model_options key(s) {stray} name no model of this suite ({', '.join(models)}); "
                         "give options per model, e.g. cnn3d.hidden=8 (CLI: --set cnn3d.hidden=8)")
    train_settings = {**TRAIN_DEFAULTS, **(train or {})}
    if af_data is None:
        af_root = out_dir / "data" / "appearance-free"
        _log(f"generating the appearance-free version of {rgb_root}")
        make_appearance_free_dataset(rgb_root, af_root, flow_method=flow_method, mode=mode, placement=placement,
                                     seed=seed, grayscale=grayscale)
    else:
        af_root = Path(af_data)
    versions = {"rgb": rgb_root, "appearance_free": af_root}

    leakage_path = out_dir / "leakage.json"
    probe_settings: dict[str, Any] = {"data": {k: str(v) for k, v in versions.items()},
                                      "frames_per_video": probe_frames, "seed": seed}
    if network_probe:
        probe_settings["network"] = dict(probe_options or {})
    stored = json.loads(leakage_path.read_text()) if leakage_path.is_file() else {}
    if stored.get("settings") != probe_settings:  # first run, or other data / probe settings: probe again
        probes = {key: single_frame_probe(root, frames_per_video=probe_frames, seed=seed)
                  for key, root in versions.items()}
        if network_probe:
            from kinetoscope.evaluate.leakage import frame_network_probe

            options = {"frames_per_video": probe_frames, "seed": seed, "flow_method": flow_method,
                       **(probe_options or {})}
            _log("single-frame network probes (RGB frames, appearance-free frames, flow images)")
            probes["rgb_network"] = frame_network_probe(rgb_root, **options)
            probes["appearance_free_network"] = frame_network_probe(af_root, **options)
            probes["flow_network"] = frame_network_probe(rgb_root, kind="flow", flow_root=af_root, **options)
        stored = {"settings": probe_settings, "probes": probes}
        atomic_write_json(leakage_path, stored)
    leakage = stored["probes"]

    rows, runs = [], {}
    frames = DatasetStore(rgb_root).meta().get("frames")
    for model in models:
        options = dict((model_options or {}).get(model, {}))
        row: dict[str, Any] = {"model": model, "options": options, "fxr": f"{frames}×1" if frames else ""}
        for key, root in versions.items():
            name = f"{model}-{'rgb' if key == 'rgb' else 'af'}"
            run_dir = train_suite_run(out_dir, name, root, model, options, train_settings, seed)
            runs[name] = f"runs/{name}"
            summary = json.loads((run_dir / "summary.json").read_text())
            row[key] = summary["evaluations"]["val"]["accuracy"]
            row[f"{key}_params"] = summary.get("params")
        row["delta"] = row["rgb"] - row["appearance_free"]
        rows.append(row)

    table = [[r["model"], r["fxr"], r["rgb"], r["appearance_free"], r["delta"], r.get("rgb_params")] for r in rows]
    if leakage:
        table.append(["single-frame probe", "1×1", leakage["rgb"]["accuracy"], leakage["appearance_free"]["accuracy"],
                      leakage["rgb"]["accuracy"] - leakage["appearance_free"]["accuracy"], ""])
    if "rgb_network" in leakage:
        rgb_acc, af_acc = leakage["rgb_network"]["accuracy"], leakage["appearance_free_network"]["accuracy"]
        table.append(["single-frame ResNet probe", "1×1", rgb_acc, af_acc, rgb_acc - af_acc, ""])
        table.append(["single-frame ResNet probe, flow images", "1×1", leakage["flow_network"]["accuracy"], "", "",
                      ""])
    atomic_write_text(out_dir / "table.csv",
                      csv_text(["model", "f×r", "rgb", "appearance_free", "delta", "params"], table))
    names = (DatasetStore(rgb_root).meta().get("name", rgb_root.name), "appearance-free")
    atomic_write_text(out_dir / "sections" / "appearance_free.html", appearance_free_section(rows, leakage, names))
    af_settings = DatasetStore(af_root).meta().get("appearance_free", {})
    atomic_write_json(out_dir / "study.json", {
        "kind": "appearance-free",
        "title": "RGB vs appearance-free videos",
        "intro": ("Appearance-free videos (Ilic 2024 Ch. 4) keep only the motion of a video: "
                  "uniform noise moved by its optical flow. A model that recognises the appearance-free "
                  "version uses motion; the drop Δ from RGB measures how much it relied on appearance. "
                  f"RGB data: {rgb_root}; appearance-free data: {af_root} "
                  f"(settings {json.dumps(af_settings)})."),
        "sections": ["sections/appearance_free.html"],
        "runs": runs,
        "columns": [["val", "accuracy (val)"]],
        "chance": leakage.get("rgb", {}).get("chance"),
        "rows": rows,
        "leakage": leakage,
        "settings": {"models": list(models), "model_options": model_options or {}, "train": train_settings,
                     "seed": seed},
    })
    return build_report(out_dir)


__all__ = ["TRAIN_DEFAULTS", "run_appearance_free_suite", "single_frame_probe", "train_suite_run"]
