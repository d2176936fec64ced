"""``kinetoscope compare RUN_A RUN_B``: are two models' accuracies on the same clips different?

McNemar's test (McNemar 1947) as Stergiou 2021 §6.4.5 applies it to pairs of models: over the
clips both models saw, the contingency table (Stergiou 2021 Table 6.5; model 2 = RUN_B in rows,
model 1 = RUN_A in columns)::

                 A correct   A wrong
    B correct        a           b
    B wrong          c           d

and ``χ² = (|b − c| − 1)² / (b + c)`` with Edwards' continuity correction (Stergiou 2021 Eq. 6.1),
χ²-distributed with one degree of freedom; equal accuracy is rejected below ``alpha`` (0.05). The
exact binomial p-value (``b`` successes of ``b + c`` at 1/2) is reported beside it: it is the one to
trust when ``b + c`` is small (below about 25).

The two runs must have scored the same clips: their ``predictions.csv`` (or an evaluation's) are
matched by ``(video_id, clip_index)``; a different clip set or a different label is refused, naming
the clips concerned.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, Any]:
    """McNemar's test (``evaluate.statistics.mcnemar``) on two boolean vectors of per-example
    correctness, with the exact binomial p-value beside it (module docstring)."""
    from scipy.stats import binomtest

    from kinetoscope.evaluate.statistics import mcnemar as mcnemar_counts

    a_correct = np.asarray(a_correct, dtype=bool)
    b_correct = np.asarray(b_correct, dtype=bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError(f"correctness vectors differ in length: {a_correct.shape} vs {b_correct.shape}")
    test = mcnemar_counts(int(np.sum(b_correct & ~a_correct)), int(np.sum(a_correct & ~b_correct)),
                          a=int(np.sum(a_correct & b_correct)), d=int(np.sum(~a_correct & ~b_correct)))
    discordant = test.b + test.c
    return {
        "n": int(a_correct.size),
        "table": {"a": test.a, "b": test.b, "c": test.c, "d": test.d},
        "chi2": test.chi2,
        "p_value": test.p,
        "p_exact": float(binomtest(test.b, discordant, 0.5).pvalue) if discordant else 1.0,
        "accuracy_a": float(a_correct.mean()) if a_correct.size else float("nan"),
        "accuracy_b": float(b_correct.mean()) if b_correct.size else float("nan"),
    }


def predictions_path(run_dir: Path, evaluation: str, level: str) -> Path:
    """Where ``evaluate`` wrote ``evaluation``'s per-clip (``level="clip"``) or per-video predictions."""
    filename = {"clip": "predictions.csv", "video": "video_predictions.csv"}.get(level)
    if filename is None:
        raise ValueError(f"level={level!r}; expected 'clip' or 'video'")
    folder = run_dir if evaluation == "val" else run_dir / "evaluations" / evaluation
    return folder / filename


def _read(path: Path, level: str, hint: str) -> dict[tuple[str, ...], tuple[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `{hint}` first")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = {}
    for row in rows:
        key = (row["video_id"], row["clip_index"]) if level == "clip" else (row["video_id"],)
        out[key] = (row["label"], row["pred"])
    return out


def _name(key: tuple[str, ...]) -> str:
    return key[0] if len(key) == 1 else f"{key[0]}#{key[1]}"


def compare_runs(run_a: str | Path, run_b: str | Path, evaluation: str = "val", level: str = "clip",
                 alpha: float = 0.05) -> dict[str, Any]:
    """McNemar's test between two runs' predictions of ``evaluation`` (``"val"`` = the runs' own
    validation predictions, else the name given to ``kinetoscope evaluate --name``)."""
    run_a, run_b = Path(run_a), Path(run_b)
    path_a, path_b = predictions_path(run_a, evaluation, level), predictions_path(run_b, evaluation, level)
    def hint(run: Path) -> str:
        return f"kinetoscope evaluate {run}" + ("" if evaluation == "val" else f" --name {evaluation} ...")

    pred_a, pred_b = _read(path_a, level, hint(run_a)), _read(path_b, level, hint(run_b))
    only_a, only_b = sorted(set(pred_a) - set(pred_b)), sorted(set(pred_b) - set(pred_a))
    if only_a or only_b:
        def listed(keys):
            return ", ".join(_name(k) for k in keys[:10]) + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")

        parts = []
        if only_a:
            parts.append(f"{len(only_a)} only in {path_a}: {listed(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} only in {path_b}: {listed(only_b)}")
        raise ValueError("McNemar's test needs both runs on the same clips; " + "; ".join(parts))
    keys = sorted(pred_a)
    mislabelled = [k for k in keys if pred_a[k][0] != pred_b[k][0]]
    if mislabelled:
        raise ValueError(f"the runs disagree on the label of {len(mislabelled)} clip(s), e.g. "
                         f"{_name(mislabelled[0])}: {pred_a[mislabelled[0]][0]!r} vs {pred_b[mislabelled[0]][0]!r}")
    if not keys:
        raise ValueError(f"{path_a} holds no predictions")
    result = mcnemar(np.array([pred_a[k][0] == pred_a[k][1] for k in keys]),
                     np.array([pred_b[k][0] == pred_b[k][1] for k in keys]))
    result.update({"run_a": str(run_a), "run_b": str(run_b), "evaluation": evaluation, "level": level,
                   "alpha": alpha, "significant": result["p_value"] < alpha})
    return result


def comparison_table(result: dict[str, Any]):
    """A ``rich.table.Table`` of :func:`compare_runs`: the contingency table, χ², p-values, verdict."""
    from rich.table import Table

    t = result["table"]
    table = Table(title=f"McNemar: {result['run_b']} (rows) vs {result['run_a']} (columns), "
                        f"{result['n']} {result['level']}s of {result['evaluation']}")
    table.add_column("")
    table.add_column("A correct", justify="right")
    table.add_column("A wrong", justify="right")
    table.add_column("total", justify="right")
    table.add_row("B correct", str(t["a"]), str(t["b"]), str(t["a"] + t["b"]))
    table.add_row("B wrong", str(t["c"]), str(t["d"]), str(t["c"] + t["d"]))
    table.add_row("total", str(t["a"] + t["c"]), str(t["b"] + t["d"]), str(result["n"]))
    table.add_row("accuracy", f"A {result['accuracy_a']:.4f}", f"B {result['accuracy_b']:.4f}", "")
    table.add_row("χ² (Edwards)", f"{result['chi2']:.3f}", "", "")
    table.add_row("p (χ², 1 dof)", f"{result['p_value']:.3g}", "exact", f"{result['p_exact']:.3g}")
    verdict = "different" if result["significant"] else "not shown different"
    table.add_row(f"at α = {result['alpha']}", verdict, "", "")
    return table


__all__ = ["compare_runs", "comparison_table", "mcnemar", "predictions_path"]
