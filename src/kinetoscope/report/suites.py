"""Report sections of the probing suites (``kinetoscope suite ...``): HTML fragments and figures.

Each function returns an HTML fragment that a suite writes under ``<study>/sections/`` and names in
``study.json["sections"]``; ``report.html.build_study_report`` inserts the fragments after the intro.

* :func:`temporal_shapes_section` — Broomé 2022 Tables 5.6/5.7 layout and the rr plots of Fig. 5.10/5.11
  (rr vs h per family, rr vs parameter count).
* :func:`reversal_section` — accuracy on original vs time-reversed clips per run (Mänttäri 2020 Table 1).
* :func:`appearance_free_section` — RGB vs appearance-free accuracy with Δ (Ilic 2024 Table 4.1) and
  the single-frame leakage probe.
* :func:`privacy_section` / :func:`privacy_tradeoff_plot` — action vs identity accuracy per obfuscation
  method with f_λ (Ilic 2024 Table 5.2).
* :func:`domain_ratio_rows` / :func:`domain_ratio_section` — S1/V, S2/V, T/V, T/S1 (Broomé 2022 Tables
  5.8–5.11) with the ``*`` rule: a low T/V only counts when T/S1 < 1.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kinetoscope.report.html import html_fmt, html_img, html_table  # noqa: E402
from kinetoscope.report.plots import _save  # noqa: E402

DOMAIN_TITLES = {"2dot": "2Dot", "5dot": "5Dot", "mnist": "MNIST", "mnist-bg": "MNIST-bg"}
FAMILY_TITLES = {"cnn3d": "3D CNN", "convlstm": "ConvLSTM", "timesformer": "TimeSformer"}


def _pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def rr_plots(table: dict[str, Any], figures: Path) -> tuple[Path, Path]:
    """rr vs h (one panel per target domain, one line per family; Broomé 2022 Fig. 5.11) and rr vs parameter
    count (log x). Returns the two PNG paths."""
    targets = table["columns"][1:]
    paths = []
    for x_key, name, xlabel in (("h", "rr_vs_h.png", "hidden units per layer h"),
                                ("params", "rr_vs_params.png", "parameters")):
        fig, axes = plt.subplots(1, len(targets), figsize=(4.0 * len(targets), 3.3), sharey=True, squeeze=False)
        for ax, target in zip(axes[0], targets, strict=True):
            for family, fam in table["families"].items():
                widths = [h for h in fam["rows"] if fam["rr"].get(h, {}).get(target) is not None]
                xs = widths if x_key == "h" else [fam["params"][h] for h in widths]
                ys = [fam["rr"][h][target] for h in widths]
                ax.plot(xs, ys, "o-", label=FAMILY_TITLES.get(family, family))
            ax.set(title=f"target {DOMAIN_TITLES.get(target, target)}", xlabel=xlabel)
            if x_key == "params":
                ax.set_xscale("log")
            else:
                ax.set_xticks(sorted({h for fam in table["families"].values() for h in fam["rows"]}))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("robustness ratio rr")
        axes[0][-1].legend(fontsize=8)
        paths.append(_save(fig, figures / name))
    return paths[0], paths[1]


def temporal_shapes_section(study_dir: Path, table: dict[str, Any], source: str, settings: dict[str, Any]) -> str:
    """The Table 5.6/5.7 layout (cells ``val / target / target / target`` in %, rows per h, avg, std
    with ddof = 1, avg rr, std rr) plus the rr figures."""
    columns = table["columns"]
    families = list(table["families"])
    widths = sorted({h for f in families for h in table["families"][f]["rows"]})
    head = " / ".join(f"val {DOMAIN_TITLES[source]}" if c == "val" else DOMAIN_TITLES.get(c, c) for c in columns)

    def cell(values: dict[str, Any], fmt: Any, skip_val: bool = False) -> str:
        return " / ".join("–" if skip_val and c == "val" else fmt(values.get(c)) for c in columns)

    def row(label: str, key: str | None, fmt: Any, skip_val: bool = False, h: int | None = None) -> str:
        cells = []
        for f in families:
            fam = table["families"][f]
            values = fam["rows"].get(h, {}) if key is None else fam[key]
            cells.append(f"<td>{cell(values, fmt, skip_val)}</td>")
        return f"<tr><td>{html.escape(label)}</td>{''.join(cells)}</tr>"

    header = "".join(f"<th>{html.escape(FAMILY_TITLES.get(f, f))}</th>" for f in families)
    body = [row(str(h), None, _pct, h=h) for h in widths]
    body += [row("avg", "avg", _pct), row("std", "std", lambda v: _pct(v, 2)),
             row("avg rr", "avg_rr", _num, skip_val=True), row("std rr", "std_rr", _num, skip_val=True)]
    params = ", ".join(f"{FAMILY_TITLES.get(f, f)}: " + ", ".join(f"h={h} {n:,}" for h, n in
                       table["families"][f]["params"].items() if n is not None) for f in families)
    parts = [
        f"<h2>Cross-domain table (train {DOMAIN_TITLES[source]})</h2>",
        f"<p class='muted'>% accuracy: {html.escape(head)} — laid out like Broomé 2022 Table "
        f"{'5.6' if source == '2dot' else '5.7'}. std is the sample standard deviation over h (ddof 1); "
        "rr = target accuracy / best source validation accuracy (↑).</p>",
        f"<table><thead><tr><th>h</th>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>",
        f"<p class='muted'>Parameters — {html.escape(params)}.</p>",
    ]
    best = _best_family(table)
    if best:
        parts.append(f"<p>Highest avg rr (mean over the target domains): <b>{html.escape(best)}</b>.</p>")
    if any(table["families"][f]["rr"] for f in families):
        by_h, by_params = rr_plots(table, study_dir / "figures")
        parts.append("<h3>Robustness ratio vs width and vs parameter count</h3>")
        parts.append(html_img(by_h, "rr vs h"))
        parts.append(html_img(by_params, "rr vs parameters"))
    return "\n".join(parts)


def _best_family(table: dict[str, Any]) -> str | None:
    scores = {}
    for family, fam in table["families"].items():
        values = [v for v in fam["avg_rr"].values() if v is not None]
        if values:
            scores[FAMILY_TITLES.get(family, family)] = sum(values) / len(values)
    if not scores:
        return None
    best = max(scores, key=lambda k: scores[k])
    return f"{best} — " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items())


def reversal_section(rows: list[dict[str, Any]]) -> str:
    """Rows ``{run, model, params, n, original, reversed}`` -> table with Δ = original − reversed and
    the ratio reversed / original (Mänttäri 2020 Table 1 reports the two side by side)."""
    table_rows = []
    for r in rows:
        delta = r["original"] - r["reversed"]
        ratio = r["reversed"] / r["original"] if r["original"] else None
        table_rows.append([r["run"], r.get("model", ""), f"{r.get('params') or 0:,}", r.get("n"),
                           r["original"], r["reversed"], delta, ratio])
    return ("<h2>Reversal</h2><p class='muted'>Accuracy on the evaluation split with the frames of every "
            "clip in their original order and reversed (Mänttäri 2020 §4.2, Table 1). A model that uses the "
            "order of frames loses accuracy under reversal; Δ = original − reversed.</p>"
            + html_table(["run", "model", "params", "clips", "original", "reversed", "Δ", "reversed / original"],
                     table_rows))


def appearance_free_section(rows: list[dict[str, Any]], leakage: dict[str, dict[str, Any]],
                            dataset_names: tuple[str, str]) -> str:
    """Ilic 2024 Table 4.1 layout: model, f×r, RGB accuracy, appearance-free accuracy, Δ (percent),
    with the single-frame leakage probe as the first row (the thesis' ResNet50 single-image row)."""
    rgb_name, af_name = dataset_names
    header = ["model", "f×r", rgb_name, af_name, "Δ"]
    table_rows = []
    if leakage:
        rgb, af = leakage.get("rgb", {}), leakage.get("appearance_free", {})
        table_rows.append([f"single frame ({rgb.get('classifier', 'probe')})", "1×1", _pct(rgb.get("accuracy")),
                           _pct(af.get("accuracy")), _pct(_delta(rgb.get("accuracy"), af.get("accuracy")))])
    if "rgb_network" in leakage:
        rgb, af = leakage["rgb_network"], leakage.get("appearance_free_network", {})
        table_rows.append([f"single frame ({rgb.get('classifier', 'ResNet')})", "1×1", _pct(rgb.get("accuracy")),
                           _pct(af.get("accuracy")), _pct(_delta(rgb.get("accuracy"), af.get("accuracy")))])
    for r in rows:
        table_rows.append([r["model"], r.get("fxr", ""), _pct(r.get("rgb")), _pct(r.get("appearance_free")),
                           _pct(_delta(r.get("rgb"), r.get("appearance_free")))])
    parts = ["<h2>RGB vs appearance-free</h2>",
             "<p class='muted'>Top-1 % on the validation split of the RGB dataset and of its appearance-free "
             "version (Ilic 2024 Table 4.1; Δ = RGB − appearance-free).</p>", html_table(header, table_rows)]
    if leakage:
        lines = []
        for key, title in (("rgb", rgb_name), ("appearance_free", af_name), ("rgb_network", rgb_name),
                           ("appearance_free_network", af_name), ("flow_network", f"{rgb_name} flow images")):
            probe = leakage.get(key)
            if probe:
                lines.append([title, probe.get("classifier", ""), probe["n_test"], _pct(probe["accuracy"]),
                              _pct(probe["chance"]), f"{_pct(probe['ci_low'])}–{_pct(probe['ci_high'])}",
                              html_fmt(probe["p_value"], 4)])
        parts.append("<h3>Leakage probes</h3><p class='muted'>Single-frame classifiers trained and tested on "
                     "frames of each version (and, with the network probe, on flow images); appearance-free "
                     "frames must be at chance, flow images leak shape (Ilic 2024 §4.4: 65.6 % RGB, 29.4 % "
                     "flow images, 1.1 % AFD101, chance 0.99 %). Interval: 95 % Clopper–Pearson; p: two-sided "
                     "binomial test against chance.</p>")
        parts.append(html_table(["images", "classifier", "test images", "accuracy %", "chance %", "95 % CI", "p"],
                                lines))
    return "\n".join(parts)


def _delta(a: Any, b: Any) -> float | None:
    if a is None or b is None:
        return None
    return float(a) - float(b)


def domain_ratio_rows(accuracies: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Per model ``{V, S1, S2, T}`` accuracies -> S1/V, S2/V (↑), T/V, T/S1 (↓) (Broomé 2022 Tables
    5.8–5.11). ``star`` marks the lowest T/V of the table when its T/S1 is not < 1 (the thesis puts an
    asterisk "when a low T/V result is not accompanied by T/S1 < 1"); ``meaningful_t`` is T/S1 < 1."""
    rows = []
    for model, acc in accuracies.items():
        v, s1, s2, t = (acc.get(k) for k in ("V", "S1", "S2", "T"))

        def ratio(a: float | None, b: float | None) -> float | None:
            return a / b if a is not None and b else None

        t_s1 = ratio(t, s1)
        rows.append({"model": model, "S1/V": ratio(s1, v), "S2/V": ratio(s2, v), "T/V": ratio(t, v),
                     "T/S1": t_s1, "meaningful_t": t_s1 is not None and t_s1 < 1, "star": False})
    with_t = [r for r in rows if r["T/V"] is not None]
    if with_t:
        lowest = min(with_t, key=lambda r: r["T/V"])
        lowest["star"] = not lowest["meaningful_t"]
    return rows


def domain_ratio_section(accuracies: dict[str, dict[str, float]]) -> str:
    rows = domain_ratio_rows(accuracies)
    table_rows = [[r["model"], _num(r["S1/V"]), _num(r["S2/V"]), _num(r["T/V"]) + ("*" if r["star"] else ""),
                   _num(r["T/S1"])] for r in rows]
    return ("<h2>Shape and texture domains</h2><p class='muted'>S1: segmented actor over a blurred background; "
            "S2: the actor's box over a blurred background; T: the actor's box filled with the mean pixel, "
            "background kept (Broomé 2022 §5.4). S1/V, S2/V ↑; T/V, T/S1 ↓. * when a low T/V result is not "
            "accompanied by T/S1 &lt; 1.</p>"
            + html_table(["model", "S1/V ↑", "S2/V ↑", "T/V ↓", "T/S1 ↓"], table_rows))


def privacy_tradeoff_plot(rows: list[dict[str, Any]], path: Path, chance: tuple[float, float] | None = None) -> Path:
    """Action accuracy (↑) against identity accuracy (↓) per obfuscation method (Ilic 2024 Table 5.2 as a
    scatter); the best corner is top left. ``chance``: (action, identity) chance levels, drawn dashed."""
    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    for r in rows:
        ax.scatter(100 * r["identity"], 100 * r["action"], s=30)
        ax.annotate(r["method"], (100 * r["identity"], 100 * r["action"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    if chance is not None:
        ax.axhline(100 * chance[0], ls="--", lw=0.8, color="grey")
        ax.axvline(100 * chance[1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="identity accuracy % (lower = more private)", ylabel="action accuracy % (higher = more useful)",
           xlim=(-2, 102), ylim=(-2, 102), title="privacy–utility trade-off")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def privacy_section(rows: list[dict[str, Any]], figure: Path | None, lam: float, notes: list[str]) -> str:
    """Ilic 2024 Table 5.2 layout: per method the action accuracy (↑), the identity accuracy (↓) and
    ``f_λ = (1−λ)·a + λ·(1−p)`` (↑), with the trade-off plot."""
    header = ["method", "action %", "identity %", f"f{lam:g}"]
    table = [[r["method"], _pct(r["action"]), _pct(r["identity"]), _num(r["f"], 2)] for r in rows]
    parts = ["<h2>Privacy–utility trade-off</h2>",
             "<p class='muted'>Both recognisers are trained on clean videos only and tested on each obfuscated "
             f"version of the evaluation split (Ilic 2024 §5.4). f_λ = (1−λ)·action + λ·(1 − identity), λ = {lam:g} "
             "(Table 5.2: higher is better).</p>", html_table(header, table)]
    if figure is not None:
        parts.append(html_img(figure, "action vs identity accuracy"))
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


__all__ = ["appearance_free_section", "domain_ratio_rows", "domain_ratio_section", "privacy_section",
           "privacy_tradeoff_plot", "reversal_section", "rr_plots",
           "temporal_shapes_section"]
