"""``kinetoscope suite temporal-shapes``: the cross-domain study of Broomé 2022 §5.3.

For each model family (``convlstm``, ``cnn3d``, ``timesformer``) and each width ``h``, train on a
source domain of Temporal Shapes (2Dot or MNIST-bg; random 80/20 train/val split), keep the
best-validation checkpoint, and test it on the other three domains. The robustness ratio
``rr = target accuracy / best source validation accuracy`` measures how much of what was learnt
carries over when only the appearance changes. Tables follow Broomé 2022 Tables 5.6 (source 2Dot: val / 5Dot /
MNIST / MNIST-bg) and 5.7 (source MNIST-bg: val / MNIST / 5Dot / 2Dot): one row per h, then the
average over h, the sample standard deviation (ddof = 1), and the average and standard deviation of
rr. Each run is also tested on its validation split with every clip reversed (the reversal probe).

Layout of ``out_dir``::

    study.json            plan + settings (the resume key) + what the report shows
    data/<domain>/        the four generated domains (source: train/val, others: test)
    runs/<family>-h<h>/   one run directory per (family, h) (docs/architecture.md)
    results.csv           one row per (family, h, evaluation): accuracy, rr, params
    table.csv, table.md   the Table 5.6/5.7 layout
    figures/              rr vs h per family, rr vs parameter count
    report.html

Resume: a (family, h) whose run has ``model.safetensors`` and every evaluation is skipped; an
interrupted training continues from its ``last.ckpt``; re-running with more families or widths only
trains the new ones. Changing the scale settings, source or seed of an existing study is refused
unless ``overwrite=True``.

Scales. ``paper`` = Broomé 2022's sizes (5,000 source clips -> 4,000/1,000, 500 per target domain, SGD lr
1e-3, momentum 0.9, weight decay 1e-5, batch 64, up to 100 epochs with patience 10; TimeSformer 300 /
100; widths 1 ... 48). ``small`` fits in well under an hour on 2 CPU cores (docs/performance.md): 400 source
clips of 10 frames at 32x32 (velocities are rescaled so trajectories
keep their extent), 100 per target, Adam (which converges in far fewer epochs than SGD at lr 1e-3),
8 epochs, h = 2 and 4; the report lists every reduction. ConvLSTM cost grows with frames x pixels, so
20 frames at 64x64 is ~8x slower per clip. TimeSformer needs an even ``h`` (rotary embeddings; Broomé 2022
skipped 1, 3, 5):
odd widths are skipped for it with a note.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text

FAMILIES = ("convlstm", "cnn3d", "timesformer")
SOURCES = ("2dot", "mnist-bg")
#: evaluation domains in the column order of Broomé 2022 Table 5.6 (2Dot source) and Table 5.7 (MNIST-bg).
TARGETS = {"2dot": ("5dot", "mnist", "mnist-bg"), "mnist-bg": ("mnist", "5dot", "2dot")}
DOMAIN_TITLES = {"2dot": "2Dot", "5dot": "5Dot", "mnist": "MNIST", "mnist-bg": "MNIST-bg"}
PAPER_WIDTHS = (1, 2, 3, 5, 8, 12, 16, 24, 32, 48)
FAMILY_TITLES = {"cnn3d": "3D CNN", "convlstm": "ConvLSTM", "timesformer": "TimeSformer"}

SCALES: dict[str, dict[str, Any]] = {
    # Broomé 2022 §5.3 and the authors' code
    "paper": {
        "train_num": 5000, "eval_num": 500, "frames": 20, "size": 64, "widths": PAPER_WIDTHS,
        "optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 64,
        "max_epochs": 100, "patience": 10, "timesformer_max_epochs": 300, "timesformer_patience": 100,
    },
    "small": {
        "train_num": 400, "eval_num": 100, "frames": 10, "size": 32, "widths": (2, 4),
        "optimizer": "adam", "lr": 3e-3, "momentum": 0.9, "weight_decay": 1e-5, "batch_size": 16,
        "max_epochs": 8, "patience": 3, "timesformer_max_epochs": 8, "timesformer_patience": 3,
    },
}


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]temporal-shapes[/] {message}", highlight=False)



def study_settings(scale: str, source: str, seed: int, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The resolved settings of a study: the ``scale`` preset updated by ``settings`` (any preset key)."""
    if scale not in SCALES:
        raise ValueError(f"scale {scale!r} is not known; accepted: {', '.join(SCALES)}")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not a Temporal Shapes training domain; accepted: "
                         f"{', '.join(SOURCES)}")
    resolved = dict(SCALES[scale])
    unknown = sorted(set(settings or {}) - set(resolved))
    if unknown:
        raise ValueError(f"unknown study setting(s) {unknown}; accepted: {', '.join(resolved)}")
    resolved.update(settings or {})
    resolved["widths"] = [int(w) for w in resolved["widths"]]
    return {**resolved, "scale": scale, "source": source, "seed": int(seed)}


def run_label(family: str, width: int) -> str:
    return f"{family}-h{width}"


def _prepare(out_dir: Path, settings: dict[str, Any], overwrite: bool) -> None:
    marker = out_dir / "study.json"
    key = {k: v for k, v in settings.items() if k != "widths"}
    if out_dir.exists() and any(out_dir.iterdir()):
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if previous is None or previous.get("kind") != "temporal-shapes":
            if not overwrite:
                raise FileExistsError(f"{out_dir} is not empty and is not a temporal-shapes study directory; "
                                      "pass overwrite=True (CLI: --overwrite) or choose another output")
            shutil.rmtree(out_dir)
        else:
            old = {k: v for k, v in previous.get("settings", {}).items() if k != "widths"}
            if old != key:
                changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
                if not overwrite:
                    raise FileExistsError(
                        f"{marker} was made with other settings ({', '.join(changed)} differ); pass "
                        "overwrite=True (CLI: --overwrite) to start again, or choose another output")
                shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)


def digits_note(data: dict[str, Path]) -> str:
    """HTML: which digits the generated MNIST / MNIST-bg domains in ``data`` were drawn from (each dataset's
    ``dataset.json``), e.g. for a report's intro. Empty when no digit domain is present."""
    import html

    from kinetoscope.data.cache import DatasetStore

    lines = []
    for domain, path in data.items():
        store = DatasetStore(path)
        used = store.meta().get("digits_used") if store.exists() else None
        if used:
            lines.append(f"{DOMAIN_TITLES.get(domain, domain)}: {html.escape(used)}")
    return ("<br><span class='muted'>Digits used — " + "; ".join(lines) + ".</span>") if lines else ""


def _generate_domains(out_dir: Path, settings: dict[str, Any]) -> dict[str, Path]:
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.synth import generate_temporal_shapes

    source = settings["source"]
    domains = (source, *TARGETS[source])
    paths = {}
    for k, domain in enumerate(domains):
        path = out_dir / "data" / domain
        paths[domain] = path
        if DatasetStore(path).exists():
            continue
        is_source = domain == source
        _log(f"generating {domain} ({'train/val' if is_source else 'test'})")
        generate_temporal_shapes(
            path, domain=domain, num=settings["train_num"] if is_source else settings["eval_num"],
            split="trainval" if is_source else "test", seed=settings["seed"] + k,
            frames=settings["frames"], size=settings["size"], digits=settings.get("digits"), overwrite=True,
            gifs=5)
    return paths


def _run_config(out_dir: Path, family: str, width: int, source_dir: Path, settings: dict[str, Any]) -> Any:
    from kinetoscope.config import build_config

    prefix = "timesformer_" if family == "timesformer" else ""
    model: dict[str, Any] = {"name": family, "hidden": width}
    if family == "timesformer":
        model["patch_size"] = min(16, settings["size"])
    return build_config({
        "name": run_label(family, width),
        "out_dir": str(out_dir / "runs"),
        "data": {"root": str(source_dir), "batch_size": settings["batch_size"]},
        "model": model,
        "optim": {"name": settings["optimizer"], "lr": settings["lr"], "momentum": settings["momentum"],
                  "weight_decay": settings["weight_decay"]},
        "train": {"max_epochs": settings[f"{prefix}max_epochs"], "patience": settings[f"{prefix}patience"],
                  "seed": settings["seed"], "progress": False},
    })


def _evaluations(settings: dict[str, Any], data: dict[str, Path]) -> dict[str, dict[str, Any]]:
    wanted: dict[str, dict[str, Any]] = {"val": {}, "val-reversed": {"reverse": True}}
    wanted.update({d: {"data": data[d], "name": d} for d in TARGETS[settings["source"]]})
    return wanted


def _run_is_done(run_dir: Path, wanted: dict[str, Any]) -> bool:
    summary_path = run_dir / "summary.json"
    if not (run_dir / "model.safetensors").is_file() or not summary_path.is_file():
        return False
    done = json.loads(summary_path.read_text()).get("evaluations", {})
    return all(name in done for name in wanted)


def train_and_evaluate(out_dir: Path, family: str, width: int, data: dict[str, Path],
                       settings: dict[str, Any]) -> Path:
    """Train one (family, h) on the source domain (resuming if interrupted) and evaluate it on the
    source validation split (forward and reversed) and every target domain. Returns the run dir."""
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.train import fit

    run_dir = out_dir / "runs" / run_label(family, width)
    wanted = _evaluations(settings, data)
    if _run_is_done(run_dir, wanted):
        return run_dir
    if not (run_dir / "model.safetensors").is_file():
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
        _log(f"training {family} h={width}" + (" (resuming)" if resume else ""))
        config = _run_config(out_dir, family, width, data[settings["source"]], settings)
        fit(config, overwrite=not resume, resume=resume)
    done = json.loads((run_dir / "summary.json").read_text()).get("evaluations", {})
    for name, kwargs in wanted.items():
        if name not in done:
            predict_run(run_dir, **kwargs)
    return run_dir


def collect_results(out_dir: Path, runs: dict[str, tuple[str, int]], source: str) -> list[dict[str, Any]]:
    """One row per (family, h, evaluation) from the runs' ``summary.json``."""
    rows = []
    for label, (family, width) in runs.items():
        summary_path = out_dir / "runs" / label / "summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        evals = summary.get("evaluations", {})
        for name in ("val", "val-reversed", *TARGETS[source]):
            if name in evals:
                rows.append({"family": family, "h": width, "params": summary.get("params"),
                             "evaluation": name, "accuracy": evals[name]["accuracy"], "rr": evals[name]["rr"],
                             "best_val_acc": summary.get("best_val_acc"),
                             "epochs": summary.get("epochs_trained"),
                             "train_seconds": summary.get("train_seconds")})
    return rows


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    import numpy as np

    clean = [v for v in values if v is not None and math.isfinite(v)]
    if not clean:
        return None, None
    std = float(np.std(clean, ddof=1)) if len(clean) > 1 else None
    return float(np.mean(clean)), std


def study_table(results: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """The Broomé 2022 Table 5.6/5.7 layout: per family, per h, ``accuracy`` of val then each target domain;
    then ``avg``, ``std`` (ddof = 1) of the accuracies and ``avg_rr``, ``std_rr`` of the targets.

    Returns ``{"columns": ["val", *targets], "families": {family: {"rows": {h: {col: acc}},
    "rr": {h: {target: rr}}, "params": {h: n}, "avg": {...}, "std": {...}, "avg_rr": {...},
    "std_rr": {...}}}}``."""
    columns = ["val", *TARGETS[source]]
    families: dict[str, Any] = {}
    for row in results:
        fam = families.setdefault(row["family"], {"rows": {}, "rr": {}, "params": {}})
        if row["evaluation"] in columns:
            fam["rows"].setdefault(row["h"], {})[row["evaluation"]] = row["accuracy"]
            if row["evaluation"] != "val":
                fam["rr"].setdefault(row["h"], {})[row["evaluation"]] = row["rr"]
        fam["params"][row["h"]] = row["params"]
    for fam in families.values():
        widths = sorted(fam["rows"])
        fam["rows"] = {h: fam["rows"][h] for h in widths}
        fam["avg"], fam["std"], fam["avg_rr"], fam["std_rr"] = {}, {}, {}, {}
        for col in columns:
            fam["avg"][col], fam["std"][col] = _mean_std([fam["rows"][h].get(col) for h in widths])
            if col != "val":
                fam["avg_rr"][col], fam["std_rr"][col] = _mean_std([fam["rr"].get(h, {}).get(col) for h in widths])
    return {"columns": columns, "families": families}


def table_markdown(table: dict[str, Any], source: str) -> str:
    """The table as Markdown, accuracies in %, one cell ``val / target1 / target2 / target3``."""
    columns = table["columns"]
    families = list(table["families"])
    titles = [FAMILY_TITLES.get(f, f) for f in families]
    widths = sorted({h for f in families for h in table["families"][f]["rows"]})

    def cell(values: dict[str, Any], scale: float = 100.0, digits: int = 1, skip_val: bool = False) -> str:
        parts = []
        for col in columns:
            v = None if (skip_val and col == "val") else values.get(col)
            parts.append("–" if v is None else f"{v * scale:.{digits}f}")
        return " / ".join(parts)

    header = " / ".join("val " + DOMAIN_TITLES[source] if c == "val" else DOMAIN_TITLES[c] for c in columns)
    lines = [f"Train {DOMAIN_TITLES[source]} (% accuracy: {header})", "",
             "| h | " + " | ".join(titles) + " |", "|---|" + "---|" * len(families)]
    for h in widths:
        lines.append(f"| {h} | " + " | ".join(cell(table["families"][f]["rows"].get(h, {})) for f in families) + " |")
    for key, scale, digits, skip in (("avg", 100.0, 1, False), ("std", 100.0, 2, False),
                                     ("avg_rr", 1.0, 3, True), ("std_rr", 1.0, 3, True)):
        name = key.replace("_", " ")
        lines.append(f"| {name} | " + " | ".join(cell(table["families"][f][key], scale, digits, skip)
                                                 for f in families) + " |")
    return "\n".join(lines) + "\n"


def _table_csv(table: dict[str, Any]) -> str:
    header = ["family", "row", "params", *table["columns"], *[f"rr_{c}" for c in table["columns"][1:]]]
    rows = []
    for family, fam in table["families"].items():
        for h, values in fam["rows"].items():
            rr = fam["rr"].get(h, {})
            rows.append([family, h, fam["params"].get(h), *[values.get(c) for c in table["columns"]],
                         *[rr.get(c) for c in table["columns"][1:]]])
        rows.append([family, "avg", "", *[fam["avg"].get(c) for c in table["columns"]],
                     *[fam["avg_rr"].get(c) for c in table["columns"][1:]]])
        rows.append([family, "std", "", *[fam["std"].get(c) for c in table["columns"]],
                     *[fam["std_rr"].get(c) for c in table["columns"][1:]]])
    return csv_text(header, rows)


def run_temporal_shapes_study(
    out_dir: str | Path = "runs/temporal-shapes",
    families: Sequence[str] = ("convlstm", "cnn3d"),
    widths: Sequence[int] | None = None,
    source: str = "2dot",
    scale: str = "small",
    seed: int = 0,
    settings: dict[str, Any] | None = None,
    overwrite: bool = False,
    *,
    digits: str | Path | None = None,
) -> Path:
    """Run (or resume) the Temporal Shapes cross-domain study; returns the path of ``report.html``.

    ``widths``: the h values (default: the scale's — ``small`` (2, 4), ``paper`` 1 ... 48).
    ``settings``: overrides of the scale preset (keys of :data:`SCALES`, e.g. ``train_num``,
    ``max_epochs``, ``frames``, ``size``) — used by tests and for custom budgets. ``digits``: a directory of
    MNIST IDX files for the MNIST domains (default ``$KINETOSCOPE_MNIST``, else scikit-learn's bundled
    digits); part of the resume key, and the report says which digits were used.
    """
    from kinetoscope.models import list_models
    from kinetoscope.report.html import build_report
    from kinetoscope.report.suites import temporal_shapes_section
    from kinetoscope.synth.digits import resolve_digits_source

    out_dir = Path(out_dir)
    if widths is not None:
        settings = {**(settings or {}), "widths": list(widths)}
    resolved = {**study_settings(scale, source, seed, settings), "digits": resolve_digits_source(digits)}
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model family {unknown}; accepted: {', '.join(FAMILIES)}")
    _prepare(out_dir, resolved, overwrite)
    marker = out_dir / "study.json"
    previous = json.loads(marker.read_text()) if marker.is_file() else {}
    notes: list[str] = []
    plan: dict[str, tuple[str, int]] = {}
    for family in families:
        if family == "timesformer" and "timesformer" not in list_models():
            notes.append("timesformer is not a registered model in this installation: family skipped.")
            continue
        for width in resolved["widths"]:
            if family == "timesformer" and width % 2:
                notes.append(f"timesformer h={width} skipped: rotary position embeddings need an even "
                             "per-head dim (as Broomé 2022 §5.3 skipped h = 1, 3, 5).")
                continue
            plan[run_label(family, width)] = (family, width)
    # keep runs of earlier invocations of this study in the tables
    for label, (family, width) in previous.get("plan", {}).items():
        plan.setdefault(label, (family, int(width)))
    atomic_write_json(marker, {**previous, "kind": "temporal-shapes", "settings": resolved,
                               "title": previous.get("title", "Temporal Shapes study (in progress)"),
                               "runs": previous.get("runs", {}), "plan": plan})

    timings: dict[str, float] = dict(previous.get("timings", {}))
    started = time.perf_counter()
    data = _generate_domains(out_dir, resolved)
    timings["data_seconds"] = round(timings.get("data_seconds", 0.0) + time.perf_counter() - started, 1)
    finished: dict[str, str] = {}
    for label, (family, width) in plan.items():
        started = time.perf_counter()
        was_done = _run_is_done(out_dir / "runs" / label, _evaluations(resolved, data))
        train_and_evaluate(out_dir, family, width, data, resolved)
        if not was_done:
            timings[f"{label}_seconds"] = round(time.perf_counter() - started, 1)
        finished[label] = f"runs/{label}"

    results = collect_results(out_dir, plan, source)
    rows = [[r[k] for k in ("family", "h", "params", "evaluation", "accuracy", "rr", "best_val_acc",
                            "epochs", "train_seconds")] for r in results]
    atomic_write_text(out_dir / "results.csv", csv_text(
        ["family", "h", "params", "evaluation", "accuracy", "rr", "best_val_acc", "epochs", "train_seconds"], rows))
    table = study_table(results, source)
    atomic_write_text(out_dir / "table.csv", _table_csv(table))
    atomic_write_text(out_dir / "table.md", table_markdown(table, source))
    section = temporal_shapes_section(out_dir, table, source, resolved)
    atomic_write_text(out_dir / "sections" / "temporal_shapes.html", section)

    targets = TARGETS[source]
    previews = {d: sorted(str(p.relative_to(out_dir)) for p in (data[d] / "previews").glob("*.gif"))
                for d in (source, *targets)}
    study = {
        "kind": "temporal-shapes",
        "title": f"Temporal Shapes study — trained on {DOMAIN_TITLES[source]} ({resolved['scale']} scale)",
        "intro": _intro(resolved) + digits_note(data),
        "sections": ["sections/temporal_shapes.html"],
        "runs": finished,
        "plan": plan,
        "columns": [["val", f"{DOMAIN_TITLES[source]} (val)"], *[[t, DOMAIN_TITLES[t]] for t in targets],
                    ["val-reversed", f"{DOMAIN_TITLES[source]} reversed"]],
        "chance": 0.2,
        "previews": previews,
        "settings": resolved,
        "timings": timings,
        "notes": sorted(set(notes)) + reductions(resolved, [f for f, _ in plan.values()]),
    }
    atomic_write_json(marker, study)
    report = build_report(out_dir)
    _log(f"done; report at {report}")
    return report


def reductions(settings: dict[str, Any], families: Sequence[str] = FAMILIES) -> list[str]:
    """What this study's settings reduce relative to Broomé 2022's (``paper``) protocol, one sentence each
    (TimeSformer's epochs only when ``families`` includes it)."""
    paper = SCALES["paper"]
    names = {"train_num": "source clips (train+val)", "eval_num": "clips per target domain",
             "frames": "frames per clip", "size": "frame size (px)", "batch_size": "batch size",
             "max_epochs": "max epochs", "patience": "early-stopping patience",
             "timesformer_max_epochs": "TimeSformer max epochs", "timesformer_patience": "TimeSformer patience",
             "optimizer": "optimiser", "lr": "learning rate", "momentum": "momentum", "weight_decay": "weight decay"}
    out = []
    for key, title in names.items():
        if key.startswith("timesformer_") and "timesformer" not in families:
            continue
        if settings.get(key) != paper[key]:
            out.append(f"Reduced/changed from Broomé 2022's protocol: {title} {settings.get(key)} "
                       f"(paper: {paper[key]}).")
    if list(settings.get("widths", [])) != list(paper["widths"]):
        out.append(f"Widths h = {settings.get('widths')} (paper: {list(paper['widths'])}); averages and "
                   "standard deviations are over these widths only.")
    return out


def _intro(settings: dict[str, Any]) -> str:
    source = settings["source"]
    targets = ", ".join(DOMAIN_TITLES[t] for t in TARGETS[source])
    return (
        "The frame-dependency study of Broomé 2022 (§5.3): model families with different "
        "ways of modelling time are trained on one domain of Temporal Shapes, where the class is only "
        "the trajectory of a moving object, and tested on domains whose appearance differs but whose "
        f"motion does not. Source <b>{DOMAIN_TITLES[source]}</b>; targets {targets}. "
        f"Scale <b>{settings['scale']}</b>: {settings['train_num']} source clips (80/20 train/val), "
        f"{settings['eval_num']} per target, {settings['frames']} frames of {settings['size']}² px, widths "
        f"h = {settings['widths']}, {settings['optimizer']} lr {settings['lr']}, up to "
        f"{settings['max_epochs']} epochs (patience {settings['patience']}). "
        "rr = target accuracy / best source validation accuracy; higher is more robust."
    )


__all__ = ["FAMILIES", "SCALES", "SOURCES", "TARGETS", "collect_results", "digits_note", "reductions",
           "run_temporal_shapes_study",
           "study_settings", "study_table", "table_markdown", "train_and_evaluate"]
