"""Score metrics (top-5, mean-class accuracy, P/R, AUROC), the confusion PNG of evaluate, McNemar."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kinetoscope.evaluate.compare import compare_runs, mcnemar
from kinetoscope.evaluate.metrics import score_metrics
from kinetoscope.utils import csv_text


def test_score_metrics_on_known_scores():
    classes = [f"c{i}" for i in range(7)]
    labels = np.array([0, 0, 1, 6])
    scores = np.zeros((4, 7))
    scores[0, 0] = 1  # right
    scores[1, :] = np.arange(7)  # class 0 ranks last: wrong at top-1 and top-5
    scores[2, [6, 5, 4, 3, 1]] = [5, 4, 3, 2, 1]  # class 1 ranks fifth: top-5 only
    scores[3, 6] = 1  # right
    m = score_metrics(labels, scores, classes)
    assert m["top1"] == pytest.approx(0.5) and m["top5"] == pytest.approx(0.75)
    # recall: c0 1/2, c1 0, c6 1 -> mean over the classes that occur
    assert m["mean_class_accuracy"] == pytest.approx((0.5 + 0 + 1) / 3)
    # predictions: c0, c6, c6, c6 -> precision c6 = 1/3, c0 = 1
    assert m["per_class_precision"]["c6"] == pytest.approx(1 / 3) and m["per_class_precision"]["c0"] == 1
    assert m["per_class_recall"]["c0"] == pytest.approx(0.5) and m["auroc"] is None


def test_binary_auroc_is_the_probability_a_positive_outranks_a_negative():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    m = score_metrics(labels, scores, ["no_pain", "pain"])
    # positives 0.4, 0.8 vs negatives 0.1, 0.7: 3 of 4 pairs ordered right
    assert m["auroc"] == pytest.approx(0.75) and m["top5"] == 1.0


def test_mcnemar_reproduces_stergiou_table_6_6():
    # r3d-50 with vs without Class Regularisation, K-400 val: a 8112, b 659, c 576, d 4314 -> chi2 5.445, p 1.9e-2
    a, b, c, d = 8112, 659, 576, 4314
    original = np.array([1] * a + [0] * b + [1] * c + [0] * d, dtype=bool)
    with_cr = np.array([1] * a + [1] * b + [0] * c + [0] * d, dtype=bool)
    result = mcnemar(original, with_cr)
    assert result["table"] == {"a": a, "b": b, "c": c, "d": d}
    assert result["chi2"] == pytest.approx(5.445, abs=1e-3) and result["p_value"] == pytest.approx(1.9e-2, abs=1e-3)
    # r3d-101: b 473, c 134 -> chi2 188.211, p 7.8e-43
    r = mcnemar(np.array([0] * 473 + [1] * 134, bool), np.array([1] * 473 + [0] * 134, bool))
    assert r["chi2"] == pytest.approx(188.211, abs=1e-3) and r["p_value"] == pytest.approx(7.8e-43, rel=0.02)
    assert 0 < r["p_exact"] < 1e-40
    same = mcnemar(np.ones(5, bool), np.ones(5, bool))
    assert same["chi2"] == 0 and same["p_value"] == 1.0


def write_predictions(run: Path, rows: list[tuple[str, int, str, str]]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    body = [[v, "s", k, lab, pred, 0.5, 0.5] for v, k, lab, pred in rows]
    header = ["video_id", "subject", "clip_index", "label", "pred", "score_a", "score_b"]
    (run / "predictions.csv").write_text(csv_text(header, body))


def test_compare_runs_counts_the_table_and_refuses_different_clip_sets(tmp_path):
    clips = [(f"v{i}", 0, "a" if i % 2 else "b") for i in range(10)]
    write_predictions(tmp_path / "A", [(v, k, lab, lab if i < 8 else "x") for i, (v, k, lab) in enumerate(clips)])
    write_predictions(tmp_path / "B", [(v, k, lab, lab if i >= 3 else "x") for i, (v, k, lab) in enumerate(clips)])
    result = compare_runs(tmp_path / "A", tmp_path / "B")
    # A right on 0..7, B right on 3..9: both 3..7 (5), B only 8,9 (2), A only 0,1,2 (3), neither 0
    assert result["table"] == {"a": 5, "b": 2, "c": 3, "d": 0} and result["n"] == 10
    assert result["chi2"] == pytest.approx(0.0) and not result["significant"]
    write_predictions(tmp_path / "C", [(v, k, lab, lab) for v, k, lab in clips[:8]] + [("w9", 0, "a", "a")])
    with pytest.raises(ValueError, match=r"2 only in .*A.*v8#0, v9#0; 1 only in .*C.*w9#0"):
        compare_runs(tmp_path / "A", tmp_path / "C")
    with pytest.raises(FileNotFoundError, match="kinetoscope evaluate"):
        compare_runs(tmp_path / "A", tmp_path / "A", evaluation="other-domain")


def test_evaluate_writes_top5_auroc_and_a_confusion_png_and_compare_cli_runs(untrained_run, tmp_path):
    from typer.testing import CliRunner

    from kinetoscope.cli import app
    from kinetoscope.evaluate.run import predict_run

    metrics = predict_run(untrained_run)
    assert {"top5", "mean_class_accuracy", "per_class_precision", "per_class_recall", "auroc"} <= set(metrics)
    png = untrained_run / "evaluations" / "val_confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    other = tmp_path / "copy"
    shutil.copytree(untrained_run, other)
    result = CliRunner().invoke(app, ["compare", str(untrained_run), str(other), "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "χ²" in result.output and (tmp_path / "c.json").is_file()
