"""``report.html`` for a run directory or a study (demo/suite) directory.

One self-contained file: figures are embedded as data URIs, so the report can be mailed or opened
from anywhere. A study directory holds ``study.json`` naming its runs and evaluation columns.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from kinetoscope.evaluate.plots import confusion_plot
from kinetoscope.explain.run import explanations_section
from kinetoscope.report.plots import domain_bars, training_curves
from kinetoscope.utils import atomic_write_text

STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1d2330; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #dde;
     padding-bottom: .2rem; } .muted { color: #667; font-size: .9rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #d5d9e2; padding: .3rem .6rem; text-align: right; }
th { background: #f1f3f8; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; } .gifs { display: flex; flex-wrap: wrap; gap: 1rem; }
.gifs figure { margin: 0; text-align: center; font-size: .8rem; }
.gifs img { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #ccd; }
.good { color: #1a7f37; } .bad { color: #b42318; }
"""


def html_img(path: Path, alt: str = "", css: str = "") -> str:
    """An ``<img>`` with the PNG/GIF inlined as a data URI (reports are one self-contained file)."""
    kind = "gif" if path.suffix.lower() == ".gif" else "png"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    style = f' style="{css}"' if css else ""
    return f'<img alt="{html.escape(alt)}" src="data:image/{kind};base64,{data}"{style}>'


def html_fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to ``digits`` decimals, missing values as an en dash, text escaped."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table of ``rows`` under ``header``, cells formatted by :func:`html_fmt`."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_page(title: str, body: str) -> str:
    """A complete HTML page with the report style sheet around ``body``."""
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>\n"
    )


def _load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_section(run_dir: Path, figures: Path, label: str | None = None) -> str:
    """HTML for one run: headline numbers, curves, evaluations, validation confusion matrix."""
    summary = _load_json(run_dir / "summary.json")
    if summary.get("task") == "detect_track":
        from kinetoscope.report.detect_track import detect_track_section

        return detect_track_section(run_dir)
    label = label or summary.get("name", run_dir.name)
    parts = [f"<h2>{html.escape(label)}</h2>"]
    parts.append(
        "<p class='muted'>"
        f"model <b>{html.escape(str(summary.get('model', '?')))}</b> "
        f"{html.escape(json.dumps(summary.get('model_options', {})))}, "
        f"{summary.get('params', 0):,} parameters; trained {summary.get('epochs_trained', '?')} epochs in "
        f"{summary.get('train_seconds', 0):.0f} s ({html.escape(str(summary.get('stopped_by', '')))}); "
        f"best validation accuracy {html_fmt(summary.get('best_val_acc'))}.</p>"
    )
    if (run_dir / "metrics.csv").is_file():
        curve = training_curves({label: run_dir / "metrics.csv"}, figures / f"{run_dir.name}_curves.png")
        parts.append(html_img(curve, f"{label} training curves"))
    evaluations = summary.get("evaluations", {})
    if evaluations:
        rows = [[name, e.get("domain") or "", "yes" if e.get("reverse") else "", e.get("n"), e.get("accuracy"),
                 e.get("macro_f1"), e.get("rr")] for name, e in evaluations.items()]
        parts.append(html_table(["evaluation", "domain", "reversed", "clips", "accuracy", "macro-F1", "rr"], rows))
    val = _load_json(run_dir / "evaluations" / "val.json")
    if val:
        parts.append(html_img(confusion_plot(val, figures / f"{run_dir.name}_confusion.png",
                                         title=f"{label}: validation"), "confusion matrix"))
    parts.append(explanations_section(run_dir))
    return "\n".join(parts)


def build_run_report(run_dir: Path) -> Path:
    figures = run_dir / "figures"
    summary = _load_json(run_dir / "summary.json")
    body = f"<h1>kinetoscope run: {html.escape(summary.get('name', run_dir.name))}</h1>"
    body += run_section(run_dir, figures)
    path = run_dir / "report.html"
    atomic_write_text(path, html_page(f"kinetoscope — {run_dir.name}", body))
    return path


def build_study_report(study_dir: Path) -> Path:
    """A study (``study.json``: title, intro, runs {label: dir}, columns [[evaluation name, header]],
    chance, previews {domain: [gif paths]}, notes)."""
    study = _load_json(study_dir / "study.json")
    figures = study_dir / "figures"
    runs = {label: study_dir / rel for label, rel in study["runs"].items()}
    body = [f"<h1>{html.escape(study.get('title', 'kinetoscope study'))}</h1>"]
    if study.get("intro"):
        body.append(f"<p>{study['intro']}</p>")
    for fragment in study.get("sections", []):  # pre-rendered HTML of a suite (report/suites.py)
        if (study_dir / fragment).is_file():
            body.append((study_dir / fragment).read_text())

    columns = study.get("columns", [])
    header = ["model", "params", *[c[1] for c in columns]]
    rows, bars = [], {}
    rr_rows = []
    for label, run_dir in runs.items():
        summary = _load_json(run_dir / "summary.json")
        evals = summary.get("evaluations", {})
        rows.append([label, f"{summary.get('params', 0):,}", *[evals.get(c[0], {}).get("accuracy") for c in columns]])
        bars[label] = {c[1]: evals.get(c[0], {}).get("accuracy") for c in columns if c[0] in evals}
        rr_rows.append([label, *[evals.get(c[0], {}).get("rr") for c in columns[1:]]])
    body.append("<h2>Results</h2>")
    body.append("<p class='muted'>Accuracy per evaluation (chance "
                f"{html_fmt(study.get('chance'))}). rr = target accuracy / best source validation accuracy "
                "(Broomé 2022 §5.3).</p>")
    body.append(html_table(header, rows))
    if len(columns) > 1:
        body.append(html_table(["rr", *[c[1] for c in columns[1:]]], rr_rows))
    if bars:
        body.append(html_img(domain_bars(bars, figures / "accuracy_bars.png", chance=study.get("chance")),
                         "accuracy per domain"))
    from kinetoscope.report.masks import mask_comparison_section

    body.append(mask_comparison_section(runs))
    curves = {label: d / "metrics.csv" for label, d in runs.items() if (d / "metrics.csv").is_file()}
    if curves:
        body.append("<h2>Training curves</h2>")
        body.append(html_img(training_curves(curves, figures / "training_curves.png"), "training curves"))
    previews = study.get("previews", {})
    if previews:
        body.append("<h2>Sample clips</h2><div class='gifs'>")
        for group, gifs in previews.items():
            for gif in gifs:
                p = study_dir / gif
                if p.is_file():
                    body.append(f"<figure>{html_img(p, p.stem)}<figcaption>{html.escape(group)}: "
                                f"{html.escape(p.stem)}</figcaption></figure>")
        body.append("</div>")
    for label, run_dir in runs.items():
        body.append(run_section(run_dir, figures, label))
    if study.get("notes"):
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in study["notes"]) + "</ul>")
    path = study_dir / "report.html"
    atomic_write_text(path, html_page(study.get("title", "kinetoscope"), "\n".join(body)))
    return path


def build_report(path: str | Path) -> Path:
    """Rebuild ``report.html`` for a run directory or a study directory."""
    path = Path(path)
    if (path / "study.json").is_file():
        return build_study_report(path)
    if (path / "summary.json").is_file():
        return build_run_report(path)
    raise FileNotFoundError(f"{path} holds neither study.json nor summary.json: not a run or study directory")
