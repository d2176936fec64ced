"""The temporal-mask comparison of a study's models (Mänttäri 2020 §4.3, Table 4): mask length, drop ratio
and drop difference per model, Welch's p for two models, and the protocol the masks were learned with.

Mask lengths of two models are only comparable when both were learned with the same fixed number of
iterations (``protocol: paper``, :mod:`kinetoscope.explain.temporal_mask`); the section says so in red
when the runs' masks were learned otherwise or differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kinetoscope.explain.run import mask_protocol_notes, read_index
from kinetoscope.explain.stats import comparison_table
from kinetoscope.report.html import html_table

MASK_STATISTICS = ("mask_length", "drop_ratio", "drop_difference")


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def mask_comparison_section(runs: Mapping[str, Path]) -> str:
    """HTML: one row per run with temporal masks (``<run>/explanations/index.csv``); empty if none has any."""
    per_model: dict[str, dict[str, list[float]]] = {}
    settings: dict[str, set[tuple[str, str]]] = {}
    all_rows = []
    for label, run_dir in runs.items():
        rows = [r for r in read_index(Path(run_dir) / "explanations") if r.get("method") == "temporal-mask"]
        if not rows:
            continue
        all_rows += rows
        per_model[label] = {s: [_number(r.get(s)) for r in rows] for s in MASK_STATISTICS}
        settings[label] = {(r.get("protocol") or "unrecorded", r.get("iterations") or "") for r in rows}
    if not per_model:
        return ""
    header, table = comparison_table(per_model, MASK_STATISTICS)
    parts = ["<h2>Temporal masks</h2>", *mask_protocol_notes(all_rows)]
    protocols = {p for values in settings.values() for p, _ in values}
    fixed = {(p, n) for values in settings.values() for p, n in values}
    if len(per_model) > 1 and (protocols != {"paper"} or len(fixed) != 1):
        parts.append("<p class='bad'>The models' masks were not all learned with the paper protocol at one "
                     "fixed iteration count; their mask lengths are not comparable (Mänttäri 2020 §4.3).</p>")
    parts.append("<p class='muted'>Mean ± std over the explained clips (drop ratio over the clips that pass "
                 "the 0.001 filter); the last row is Welch's t-test when there are two models.</p>")
    parts.append(html_table(header, table))
    return "\n".join(parts)
