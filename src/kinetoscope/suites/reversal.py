"""Probes of already-trained runs: time reversal and the shape/texture domains.

* ``kinetoscope suite reversal RUN...`` — :func:`run_reversal_suite`: each run's accuracy on its
  evaluation split with the clips' frames in the original order and reversed (Mänttäri 2020 §4.2,
  Table 1: "reverse every validation clip at test time; report next to the forward score"; Broomé 2022
  §5.3 does the same on Temporal Shapes). A model that ignores the order of frames scores the
  same both ways; the drop Δ = original − reversed is its reliance on temporal order.
* ``kinetoscope suite shape-texture RUN... --domains DIR`` — :func:`run_shape_texture_suite`: each
  run's accuracy on its validation split (V) and on the S1, S2 and T domains built by
  :func:`kinetoscope.synth.domains.make_domain_datasets`, reported as S1/V, S2/V, T/V, T/S1 with the
  ``*`` rule (Broomé 2022 §5.4, Tables 5.8–5.11).

Neither trains anything; evaluations already in a run's ``summary.json`` are reused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text


def _summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {run_dir} is not a finished kinetoscope run")
    return json.loads(path.read_text())


def _labels(run_dirs: Sequence[Path]) -> list[str]:
    """Unique labels: the run directory names, prefixed by their parent where names repeat."""
    names = [d.name for d in run_dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in run_dirs]


def _evaluate(run_dir: Path, name: str, recompute: bool, **kwargs: Any) -> dict[str, Any]:
    from kinetoscope.evaluate.run import predict_run

    done = _summary(run_dir).get("evaluations", {})
    if name in done and not recompute:
        return done[name]
    return predict_run(run_dir, name=name, **kwargs)


def run_reversal_suite(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path = "runs/reversal",
    data: str | Path | None = None,
    split: str | None = None,
    recompute: bool = False,
) -> Path:
    """Original vs time-reversed accuracy for every run; returns the path of ``report.html``.

    ``data``/``split``: evaluate on another dataset or split (default: each run's own validation
    split). Writes ``out_dir/reversal.csv`` and ``out_dir/report.html``."""
    from kinetoscope.report.html import build_report
    from kinetoscope.report.suites import reversal_section

    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise ValueError("run_reversal_suite needs at least one run directory")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if data is None and split is None else "-" + (Path(data).name if data else "") + (split or "")
    rows = []
    for label, run_dir in zip(_labels(runs), runs, strict=True):
        summary = _summary(run_dir)
        kwargs = {"data": data, "split": split}
        forward = _evaluate(run_dir, "val" if not suffix else f"original{suffix}", recompute, **kwargs)
        backward = _evaluate(run_dir, f"val-reversed{suffix}" if suffix else "val-reversed", recompute,
                             reverse=True, **kwargs)
        rows.append({"run": label, "path": str(run_dir), "model": summary.get("model", ""),
                     "params": summary.get("params"), "n": forward.get("n"),
                     "original": forward["accuracy"], "reversed": backward["accuracy"]})
    atomic_write_text(out_dir / "reversal.csv", csv_text(
        ["run", "model", "params", "clips", "original", "reversed", "delta"],
        [[r["run"], r["model"], r["params"], r["n"], r["original"], r["reversed"], r["original"] - r["reversed"]]
         for r in rows]))
    atomic_write_text(out_dir / "sections" / "reversal.html", reversal_section(rows))
    atomic_write_json(out_dir / "study.json", {
        "kind": "reversal",
        "title": "Reversal probe",
        "intro": "Accuracy of each run with the frames of every evaluation clip in order and reversed.",
        "sections": ["sections/reversal.html"],
        "runs": {r["run"]: str(Path(r["path"]).resolve()) for r in rows},
        "columns": [],
        "rows": rows,
    })
    return build_report(out_dir)


def run_shape_texture_suite(
    run_dirs: Sequence[str | Path],
    domains_root: str | Path,
    out_dir: str | Path = "runs/shape-texture",
    split: str | None = None,
    recompute: bool = False,
) -> Path:
    """Accuracy on V (each run's validation split) and on ``domains_root/{S1,S2,T}`` (those present;
    ``split`` restricts them, default all videos), then S1/V, S2/V, T/V, T/S1 per run with the ``*``
    rule. Writes ``shape_texture.csv`` and ``report.html`` in ``out_dir``; returns the report path."""
    from kinetoscope.report.html import build_report
    from kinetoscope.report.suites import domain_ratio_rows, domain_ratio_section
    from kinetoscope.synth.domains import DOMAINS

    runs = [Path(r) for r in run_dirs]
    present = {d: Path(domains_root) / d for d in DOMAINS if (Path(domains_root) / d / "dataset.json").is_file()}
    if not present:
        raise FileNotFoundError(f"{domains_root} holds none of {', '.join(DOMAINS)} (make them with "
                                "`kinetoscope synth domains`)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accuracies: dict[str, dict[str, float]] = {}
    for label, run_dir in zip(_labels(runs), runs, strict=True):
        acc = {"V": _evaluate(run_dir, "val", recompute)["accuracy"]}
        for domain, root in present.items():
            acc[domain] = _evaluate(run_dir, f"domain-{domain}", recompute, data=root, split=split)["accuracy"]
        accuracies[label] = acc
    ratios = domain_ratio_rows(accuracies)
    atomic_write_text(out_dir / "shape_texture.csv", csv_text(
        ["run", "V", "S1", "S2", "T", "S1/V", "S2/V", "T/V", "T/S1", "star"],
        [[r["model"], *[accuracies[r["model"]].get(k) for k in ("V", "S1", "S2", "T")],
          r["S1/V"], r["S2/V"], r["T/V"], r["T/S1"], r["star"]] for r in ratios]))
    atomic_write_text(out_dir / "sections" / "shape_texture.html", domain_ratio_section(accuracies))
    atomic_write_json(out_dir / "study.json", {
        "kind": "shape-texture",
        "title": "Shape and texture domains",
        "sections": ["sections/shape_texture.html"],
        "runs": {label: str(r.resolve()) for label, r in zip(_labels(runs), runs, strict=True)},
        "columns": [],
        "accuracies": accuracies,
        "ratios": ratios,
    })
    return build_report(out_dir)


__all__ = ["run_reversal_suite", "run_shape_texture_suite"]
