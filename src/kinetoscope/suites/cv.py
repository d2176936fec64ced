"""``kinetoscope cv``: subject-exclusive cross-validation with repeated random initialisations.

Broomé 2022 §3.2: leave-one-subject-out on the pain data — each subject is the
test subject once, one other subject validates (early stopping; the best-validation epoch is
tested), the rest train; the whole rotation is repeated with random initialisations (5 in Broomé 2022).
Metrics: macro-F1 (mean of the per-class F1) and accuracy, on clips and on videos.

Validation rule (``val_subject``):
- ``None`` (default): the rule of Broomé 2022 — subject ``5``, or ``1`` when 5 is the test subject — when
  both subjects exist; otherwise the most class-balanced remaining subject (balance = smallest / largest
  class share of the subject's frames; see docs/deviations.md, 'Validation subject of each
  leave-one-subject-out fold').
- a list: priority list, the first one that is not the test subject validates.
- ``"next"``: the next subject (sorted, cyclic) after the test subject.

Layout of ``out_dir``::

    cv.json                     the plan: protocol, folds (subjects), repeats, the base config
    folds/r<k>-test=<s>/        one run directory per (repeat, fold) (see docs/architecture.md)
        fold.json               the fold's test metrics; written last — the "done" marker
        test_predictions.csv    one row per test clip, test_video_predictions.csv one per video
    folds.csv                   one row per (repeat, fold)
    subjects.csv                per test subject: mean ± std over repeats
    summary.json, report.html   mean ± std over everything, and the Broomé 2022 style ± (std over test
                                subjects within a repeat, averaged over repeats; Broomé 2022 Table 3.4)

Resume: a fold with ``fold.json`` is never rerun; a fold whose training was interrupted continues
from its ``last.ckpt``; a fold that finished training but not testing is only tested. Folds run in
parallel processes with ``workers > 1`` (each gets ``cpu_count // workers`` torch threads).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.config import RunConfig
from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text

VIDEO_AGGREGATIONS = ("vote", "mean", "topk")
PROTOCOLS = ("loso",)


class SubjectLeakError(AssertionError):
    """A subject (or video) appeared in two of train / validation / test."""


def _log(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold cyan]cv[/] {message}", highlight=False)


# ---------------------------------------------------------------------------------------------- folds


def subject_balance(records: Sequence[Any], classes: Sequence[str]) -> dict[str, float]:
    """Per subject: smallest / largest class share of its frames (1 = balanced, 0 = one class only)."""
    frames: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(classes, 0.0))
    for r in records:
        frames[r.subject][r.label] += float(r.num_frames or 1)
    return {s: (min(c.values()) / max(c.values()) if max(c.values()) else 0.0) for s, c in frames.items()}


def validation_priority(
    records: Sequence[Any], classes: Sequence[str], val_subject: str | Sequence[str] | None = None
) -> list[str] | None:
    """The priority list of validation subjects for :func:`leave_one_subject_out` (module docstring);
    ``None`` means "the next subject"."""
    from kinetoscope.data.splits import SEED000_VAL_SUBJECTS

    subjects = sorted({r.subject for r in records})
    if val_subject == "next":
        return None
    if isinstance(val_subject, str):
        return [val_subject]
    if val_subject is not None:
        return [str(s) for s in val_subject]
    if all(s in subjects for s in SEED000_VAL_SUBJECTS):
        return list(SEED000_VAL_SUBJECTS)
    balance = subject_balance(records, classes)
    return sorted(subjects, key=lambda s: (-balance.get(s, 0.0), s))


def plan_folds(
    root: str | Path, val_subject: str | Sequence[str] | None = None, protocol: str = "loso"
) -> list:
    """Subject-exclusive folds (``kinetoscope.data.splits.Fold``) of every video in a dataset."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.splits import check_exclusive, leave_one_subject_out

    if protocol not in PROTOCOLS:
        raise ValueError(f"cv protocol {protocol!r} is not supported; use one of {PROTOCOLS}")
    store = DatasetStore(root)
    records = store.records()
    folds = leave_one_subject_out(
        records, val_subjects=validation_priority(records, store.classes, val_subject)
    )
    for fold in folds:
        check_exclusive(fold)
    return folds


def fold_config(config: RunConfig, fold: Any, repeat: int, folds_dir: Path) -> RunConfig:
    """The run config of one (repeat, fold): subject lists instead of splits, seed + repeat."""
    data = config.data.model_copy(
        update={
            "train_subjects": list(fold.train_subjects),
            "val_subjects": list(fold.val_subjects) if fold.val_subjects else None,
            "test_subjects": list(fold.test_subjects),
            "val_split": None,
        }
    )
    train = config.train.model_copy(update={"seed": config.train.seed + repeat, "progress": False})
    return config.model_copy(
        update={
            "name": f"r{repeat}-test={'+'.join(fold.test_subjects)}",
            "out_dir": folds_dir,
            "data": data,
            "train": train,
        }
    )


# ---------------------------------------------------------------------------------------- evaluation


def score_clips(
    model: Any, dataset: Any, frame_aggregation: str = "vote", seed: int = 0, batch_size: int = 16
) -> dict[str, Any]:
    """Clip probabilities ``[N, K]`` of ``model`` over ``dataset`` (a ``ClipDataset``) plus labels,
    video ids, subjects and clip indices. Per-frame models are turned into clip verdicts by
    majority vote (seeded random tie-break) or the mean of the frame softmax (Broomé 2022 §3.2)."""
    import torch
    from torch.utils.data import DataLoader

    from kinetoscope.device import model_device
    from kinetoscope.models.inference import model_inputs
    from kinetoscope.models.pain import clip_scores

    generator = torch.Generator().manual_seed(seed)
    model.eval()
    device = model_device(model)
    scores, labels, ids, subjects, clip_idx = [], [], [], [], []
    with torch.inference_mode():
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            logits = model(*(x.to(device) for x in model_inputs(model, batch)))
            scores.append(clip_scores(logits.cpu(), frame_aggregation, generator).numpy())
            labels.extend(int(v) for v in batch["label"].tolist())
            ids.extend(batch["video_id"])
            subjects.extend(batch["subject"])
            clip_idx.extend(int(v) for v in batch["clip_index"].tolist())
    return {
        "scores": np.concatenate(scores).astype(np.float64),
        "labels": np.asarray(labels),
        "video_id": ids,
        "subject": subjects,
        "clip_index": np.asarray(clip_idx),
    }


def evaluate_scores(
    out: dict[str, Any], classes: list[str], top_fraction: float = 0.05, seed: int = 0
) -> tuple[dict[str, Any], list[list[Any]], list[list[Any]]]:
    """Clip metrics and video metrics for every aggregation (majority vote, mean, top-k% MIL).

    Returns ``(metrics, clip_rows, video_rows)`` for the prediction CSVs."""
    from kinetoscope.evaluate.aggregate import aggregate_videos
    from kinetoscope.evaluate.metrics import classification_metrics

    scores, labels = out["scores"], out["labels"]
    preds = scores.argmax(1)
    metrics: dict[str, Any] = {"clip": classification_metrics(labels, preds, classes), "video": {}}
    clip_rows = [
        [v, s, int(c), classes[int(y)], classes[int(p)], *np.round(sc, 6).tolist()]
        for v, s, c, y, p, sc in zip(
            out["video_id"], out["subject"], out["clip_index"], labels, preds, scores, strict=True
        )
    ]
    first: dict[str, tuple[int, str]] = {}
    for vid, lab, subj in zip(out["video_id"], labels, out["subject"], strict=True):
        first.setdefault(vid, (int(lab), subj))
    per_method = {}
    for method in VIDEO_AGGREGATIONS:
        vids, vscores = aggregate_videos(
            out["video_id"], scores, method=method, top_fraction=top_fraction, seed=seed
        )
        per_method[method] = dict(zip(vids, vscores, strict=True))
        video_labels = np.array([first[v][0] for v in vids])
        metrics["video"][method] = classification_metrics(video_labels, vscores.argmax(1), classes)
    clips_per_video = Counter(out["video_id"])
    video_rows = []
    for vid, (lab, subj) in first.items():
        row = [vid, subj, classes[lab], clips_per_video[vid]]
        for method in VIDEO_AGGREGATIONS:
            s = per_method[method][vid]
            row += [classes[int(s.argmax())], *np.round(s, 6).tolist()]
        video_rows.append(row)
    return metrics, clip_rows, video_rows


def evaluate_test_part(
    run_dir: str | Path,
    config: RunConfig,
    frame_aggregation: str = "vote",
    top_fraction: float = 0.05,
    prefix: str = "test",
) -> dict[str, Any]:
    """Test a trained run on ``config``'s test part (``data.test_subjects`` or ``data.test_split``);
    writes ``<prefix>_predictions.csv`` and ``<prefix>_video_predictions.csv`` into the run directory."""
    from kinetoscope.data.datamodule import config_dataset
    from kinetoscope.device import resolve_device
    from kinetoscope.models.checkpoint import load_run_model

    run_dir = Path(run_dir)
    model, spec = load_run_model(run_dir, device=resolve_device(config.train.accelerator))
    classes = spec["classes"]
    dataset = config_dataset(config, "test", classes=classes, flow="flow" in getattr(model, "streams", ()))
    out = score_clips(
        model, dataset, frame_aggregation, seed=config.train.seed, batch_size=config.data.batch_size
    )
    metrics, clip_rows, video_rows = evaluate_scores(out, classes, top_fraction, seed=config.train.seed)
    score_cols = [f"score_{c}" for c in classes]
    atomic_write_text(
        run_dir / f"{prefix}_predictions.csv",
        csv_text(["video_id", "subject", "clip_index", "label", "pred", *score_cols], clip_rows),
    )
    vheader = ["video_id", "subject", "label", "clips"]
    for method in VIDEO_AGGREGATIONS:
        vheader += [f"pred_{method}", *[f"{method}_{c}" for c in classes]]
    atomic_write_text(run_dir / f"{prefix}_video_predictions.csv", csv_text(vheader, video_rows))
    metrics["test_subjects"] = sorted(set(out["subject"]))
    metrics["frame_aggregation"] = frame_aggregation
    metrics["top_fraction"] = top_fraction
    return metrics


def check_no_leak(summary: dict[str, Any], test_subjects: Sequence[str], where: str) -> None:
    """Raise :class:`SubjectLeakError` unless train, validation and test subjects are disjoint — checked
    on the subjects the trained run actually saw (``summary.json``) and the subjects it was tested on."""
    parts = {
        "train": set(summary["data"]["train_subjects"]),
        "val": set(summary["data"]["val_subjects"]),
        "test": set(test_subjects),
    }
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = parts[a] & parts[b]
        if both:
            raise SubjectLeakError(f"{where}: subject(s) {sorted(both)} in both {a} and {b}")


# -------------------------------------------------------------------------------------------- one fold


def run_fold(
    config_dict: dict[str, Any],
    frame_aggregation: str = "vote",
    top_fraction: float = 0.05,
    threads: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) and test one fold; returns and writes ``fold.json``. Safe to call in a worker
    process (takes and returns plain data)."""
    import torch

    from kinetoscope.train.fit import fit

    if threads:
        torch.set_num_threads(threads)
    config = RunConfig.model_validate(config_dict)
    run_dir = config.run_dir
    done = run_dir / "fold.json"
    if done.is_file():
        return json.loads(done.read_text())
    trained = (run_dir / "model.safetensors").is_file() and "best_epoch" in _read_json(
        run_dir / "summary.json"
    )
    if not trained:
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
        fit(config, overwrite=not resume, resume=resume)
    summary = _read_json(run_dir / "summary.json")
    metrics = evaluate_test_part(run_dir, config, frame_aggregation, top_fraction)
    check_no_leak(summary, metrics["test_subjects"], str(run_dir))
    result = {
        "name": config.name,
        "test_subjects": list(config.data.test_subjects or []),
        "val_subjects": summary["data"]["val_subjects"],
        "train_subjects": summary["data"]["train_subjects"],
        "seed": config.train.seed,
        "best_epoch": summary.get("best_epoch"),
        "epochs_trained": summary.get("epochs_trained"),
        "best_val": summary.get("best_val"),
        "train_seconds": summary.get("train_seconds"),
        "params": summary.get("params"),
        **metrics,
    }
    atomic_write_json(done, result)
    return result


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


# ------------------------------------------------------------------------------------------ the suite


def run_cv(
    config: RunConfig,
    protocol: str = "loso",
    repeats: int = 1,
    val_subject: str | Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    workers: int = 1,
    resume: bool = True,
    frame_aggregation: str = "vote",
    top_fraction: float = 0.05,
    threads: int | None = None,
) -> Path:
    """Cross-validate ``config`` (its ``data.root`` must carry a subject per video) and return ``out_dir``
    (default ``<config.out_dir>/<config.name>-cv``). See the module docstring for the protocol and the
    files written. ``resume=False`` refuses to touch an existing ``out_dir`` that holds folds.
    ``threads``: torch threads per fold (default: all cores split over ``workers``; on a shared machine
    1 thread per process avoids oversubscription, which can cost 10x)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if frame_aggregation not in ("vote", "mean"):
        raise ValueError(f"frame_aggregation must be 'vote' or 'mean', got {frame_aggregation!r}")
    out_dir = Path(out_dir) if out_dir is not None else config.out_dir / f"{config.name}-cv"
    folds = plan_folds(config.data.root, val_subject, protocol)
    folds_dir = out_dir / "folds"
    plan = {
        "protocol": protocol,
        "repeats": repeats,
        "frame_aggregation": frame_aggregation,
        "top_fraction": top_fraction,
        "folds": [
            {"name": f.name, "train": f.train_subjects, "val": f.val_subjects, "test": f.test_subjects}
            for f in folds
        ],
        "config": config.model_dump(mode="json"),
    }
    plan_path = out_dir / "cv.json"
    if plan_path.is_file():
        previous = json.loads(plan_path.read_text())
        if not resume:
            raise FileExistsError(f"{out_dir} already holds a cv run; resume it or choose another --out")
        same = {k: previous.get(k) for k in plan if k != "repeats"} == {
            k: v for k, v in plan.items() if k != "repeats"
        }
        if not same:
            raise ValueError(
                f"{plan_path} was planned with another config, protocol or fold list; use another --out"
            )
    atomic_write_json(plan_path, plan)

    jobs = [
        fold_config(config, fold, r, folds_dir).model_dump(mode="json")
        for r in range(repeats)
        for fold in folds
    ]
    todo = [j for j in jobs if not (Path(j["out_dir"]) / j["name"] / "fold.json").is_file()]
    _log(
        f"{len(jobs)} folds ({len(folds)} subjects x {repeats} repeats), {len(jobs) - len(todo)} already done"
    )
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        threads = threads or max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {
                pool.submit(run_fold, j, frame_aggregation, top_fraction, threads): j["name"] for j in todo
            }
            for fut in as_completed(futures):
                result = fut.result()
                _log(f"{futures[fut]}: clip F1 {result['clip']['macro_f1']:.3f}")
    else:
        import torch

        before = torch.get_num_threads()
        try:
            for j in todo:
                result = run_fold(j, frame_aggregation, top_fraction, threads)
                _log(
                    f"{j['name']}: clip F1 {result['clip']['macro_f1']:.3f}, "
                    f"acc {result['clip']['accuracy']:.3f}"
                )
        finally:
            torch.set_num_threads(before)
    results = [json.loads((Path(j["out_dir"]) / j["name"] / "fold.json").read_text()) for j in jobs]
    write_tables(out_dir, results, repeats)
    build_cv_report(out_dir)
    return out_dir


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _levels(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"clip": result["clip"], **{f"video_{m}": result["video"][m] for m in VIDEO_AGGREGATIONS}}


def write_tables(out_dir: Path, results: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """``folds.csv``, ``subjects.csv`` and ``summary.json`` from the per-fold results."""
    levels = list(_levels(results[0]))
    header = ["repeat", "test_subject", "val_subject", "best_epoch", "clips"]
    rows = []
    for r in results:
        repeat = int(r["name"].split("-")[0][1:])
        row = [
            repeat,
            "+".join(r["test_subjects"]),
            "+".join(r["val_subjects"]),
            r["best_epoch"],
            r["clip"]["n"],
        ]
        for m in _levels(r).values():
            row += [round(m["macro_f1"], 6), round(m["accuracy"], 6)]
        rows.append(row)
    for level in levels:
        header += [f"{level}_f1", f"{level}_acc"]
    atomic_write_text(out_dir / "folds.csv", csv_text(header, rows))

    by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_subject["+".join(r["test_subjects"])].append(r)
    sheader = ["test_subject", "runs"]
    for level in levels:
        sheader += [f"{level}_f1_mean", f"{level}_f1_std", f"{level}_acc_mean", f"{level}_acc_std"]
    srows = []
    for subject, rs in sorted(by_subject.items()):
        row: list[Any] = [subject, len(rs)]
        for level in levels:
            for key in ("macro_f1", "accuracy"):
                mean, std = _mean_std([_levels(x)[level][key] for x in rs])
                row += [round(mean, 6), round(std, 6)]
        srows.append(row)
    atomic_write_text(out_dir / "subjects.csv", csv_text(sheader, srows))

    summary: dict[str, Any] = {"folds": len(results), "repeats": repeats, "subjects": sorted(by_subject)}
    for level in levels:
        entry = {}
        for key in ("macro_f1", "accuracy"):
            values = [_levels(x)[level][key] for x in results]
            mean, std = _mean_std(values)
            per_repeat_std = [
                _mean_std([_levels(x)[level][key] for x in results if x["name"].startswith(f"r{k}-")])[1]
                for k in range(repeats)
            ]
            entry[key] = {"mean": mean, "std": std, "std_over_subjects": float(np.nanmean(per_repeat_std))}
        summary[level] = entry
    epochs = [r["best_epoch"] for r in results if r.get("best_epoch") is not None]
    summary["mean_best_epoch"] = float(np.mean([e + 1 for e in epochs])) if epochs else None
    summary["model"] = results[0].get("params") and {"params": results[0]["params"]}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def build_cv_report(out_dir: str | Path) -> Path:
    """``report.html`` of a cv run: headline mean ± std, per-subject and per-fold tables, a bar chart."""
    import html

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kinetoscope.report.html import html_img, html_page, html_table
    from kinetoscope.utils import atomic_path

    out_dir = Path(out_dir)
    plan = _read_json(out_dir / "cv.json")
    summary = _read_json(out_dir / "summary.json")
    model = plan.get("config", {}).get("model", {})
    levels = [k for k in summary if k == "clip" or k.startswith("video_")]
    body = [
        f"<h1>kinetoscope cv: {html.escape(plan.get('config', {}).get('name', out_dir.name))}</h1>",
        f"<p class='muted'>{html.escape(plan.get('protocol', ''))}, {summary.get('folds')} folds "
        f"({len(summary.get('subjects', []))} test subjects x {summary.get('repeats')} repeats); model "
        f"<b>{html.escape(str(model.get('name')))}</b>; clip verdict by {plan.get('frame_aggregation')} over "
        f"frames; video verdicts by majority vote, mean and top-{plan.get('top_fraction', 0) * 100:g}% MIL "
        "(Broomé 2022 §3.2-3.3). ± = std over all folds; (±) = std over test subjects within a repeat, "
        "averaged over repeats (Broomé 2022 Table 3.4).</p>",
    ]
    rows = []
    for level in levels:
        f1, acc = summary[level]["macro_f1"], summary[level]["accuracy"]
        rows.append(
            [
                level,
                f"{f1['mean']:.3f} ± {f1['std']:.3f} ({f1['std_over_subjects']:.3f})",
                f"{acc['mean']:.3f} ± {acc['std']:.3f} ({acc['std_over_subjects']:.3f})",
            ]
        )
    body.append("<h2>Summary</h2>" + html_table(["level", "macro-F1", "accuracy"], rows))
    if summary.get("mean_best_epoch") is not None:
        body.append(
            f"<p class='muted'>mean best epoch {summary['mean_best_epoch']:.1f} (transfer trains "
            f"{int(1.5 * summary['mean_best_epoch'])} epochs, Broomé 2022 §3.3).</p>"
        )
    for name, title in (("subjects.csv", "Per test subject"), ("folds.csv", "Per fold")):
        path = out_dir / name
        if path.is_file():
            with open(path, newline="") as fh:
                table = list(csv.reader(fh))
            body.append(f"<h2>{title}</h2>" + html_table(table[0], table[1:]))
    subjects_path = out_dir / "subjects.csv"
    if subjects_path.is_file():
        with open(subjects_path, newline="") as fh:
            srows = list(csv.DictReader(fh))
        fig, ax = plt.subplots(figsize=(max(4, len(srows) * 0.8), 3))
        ax.bar(
            [r["test_subject"] for r in srows],
            [float(r["clip_f1_mean"]) for r in srows],
            yerr=[float(r["clip_f1_std"]) for r in srows],
            color="#4c72b0",
            capsize=3,
        )
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set(xlabel="test subject", ylabel="clip macro-F1", ylim=(0, 1))
        figure = out_dir / "figures" / "subjects.png"
        with atomic_path(figure) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        body.append(html_img(figure, "macro-F1 per test subject"))
    path = out_dir / "report.html"
    atomic_write_text(path, html_page(f"kinetoscope cv — {out_dir.name}", "\n".join(body)))
    return path


__all__ = [
    "run_cv",
    "run_fold",
    "plan_folds",
    "evaluate_test_part",
    "score_clips",
    "evaluate_scores",
    "check_no_leak",
    "write_tables",
    "build_cv_report",
    "SubjectLeakError",
    "validation_priority",
]
