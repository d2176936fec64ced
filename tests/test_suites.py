"""Probing suites end to end at a tiny scale: Temporal Shapes study (with resume), reversal,
shape/texture domains, RGB vs appearance-free."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

TINY = {"train_num": 20, "eval_num": 5, "frames": 8, "size": 16, "max_epochs": 1, "batch_size": 10}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    from kinetoscope.suites.temporal_shapes import run_temporal_shapes_study

    out = tmp_path_factory.mktemp("study") / "ts"
    run_temporal_shapes_study(out, families=("cnn3d",), widths=(2,), settings=TINY)
    return out


def test_study_writes_the_table_5_6_layout_and_a_report(tiny_study):
    rows = list(csv.DictReader(open(tiny_study / "results.csv")))
    assert {r["evaluation"] for r in rows} == {"val", "val-reversed", "5dot", "mnist", "mnist-bg"}
    val = next(r for r in rows if r["evaluation"] == "val")
    for r in rows:  # rr = target accuracy / best source validation accuracy
        if r["rr"]:
            assert float(r["rr"]) == pytest.approx(float(r["accuracy"]) / float(val["best_val_acc"]))
    table = (tiny_study / "table.md").read_text()
    assert "val 2Dot / 5Dot / MNIST / MNIST-bg" in table and "| avg rr |" in table
    report = (tiny_study / "report.html").read_text()
    assert "Cross-domain table (train 2Dot)" in report and "rr vs h" in report
    study = json.loads((tiny_study / "study.json").read_text())
    assert any("source clips" in n for n in study["notes"])  # the report says what was reduced
    # and which digits the MNIST domains used (no MNIST copy given: the bundled scikit-learn digits)
    assert "Digits used — MNIST: scikit-learn&#x27;s bundled handwritten digits" in report
    assert "images 1200-1796 (597 images, the test pool)" in report and "not MNIST" in report


def test_study_resume_skips_finished_runs_and_adds_new_widths(tiny_study):
    from kinetoscope.suites.temporal_shapes import run_temporal_shapes_study

    weights = tiny_study / "runs" / "cnn3d-h2" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    run_temporal_shapes_study(tiny_study, families=("cnn3d",), widths=(2, 4), settings=TINY)
    assert weights.stat().st_mtime_ns == before  # (cnn3d, 2) was not trained again
    assert (tiny_study / "runs" / "cnn3d-h4" / "model.safetensors").is_file()
    assert "| 4 |" in (tiny_study / "table.md").read_text()
    with pytest.raises(FileExistsError, match="train_num"):
        run_temporal_shapes_study(tiny_study, families=("cnn3d",), widths=(2,), settings={**TINY, "train_num": 30})


def test_study_table_uses_sample_std_and_averages_rr_over_widths():
    from kinetoscope.suites.temporal_shapes import study_table

    results = []
    for h, val, target in ((1, 0.8, 0.4), (2, 0.6, 0.6), (3, 1.0, 0.5)):
        results.append({"family": "cnn3d", "h": h, "params": 10 * h, "evaluation": "val", "accuracy": val, "rr": None})
        results.append({"family": "cnn3d", "h": h, "params": 10 * h, "evaluation": "5dot", "accuracy": target,
                        "rr": target / val})
    fam = study_table(results, "2dot")["families"]["cnn3d"]
    assert fam["avg"]["val"] == pytest.approx(0.8)
    assert fam["std"]["val"] == pytest.approx(0.2)  # ddof = 1: sqrt((0.04 + 0.04 + 0) / 2)
    assert fam["avg_rr"]["5dot"] == pytest.approx((0.5 + 1.0 + 0.5) / 3)


def test_timesformer_odd_widths_are_skipped_with_a_note(tmp_path, monkeypatch):
    from kinetoscope.suites import temporal_shapes

    trained = []
    monkeypatch.setattr(temporal_shapes, "train_and_evaluate",
                        lambda out, family, width, data, settings: trained.append((family, width)))
    temporal_shapes.run_temporal_shapes_study(tmp_path / "s", families=("timesformer",), widths=(3, 2),
                                              settings={**TINY, "train_num": 10, "eval_num": 2})
    assert trained == [("timesformer", 2)]
    notes = json.loads((tmp_path / "s" / "study.json").read_text())["notes"]
    assert any("timesformer h=3 skipped" in n for n in notes)


def test_reversal_suite_reports_original_and_reversed_accuracy(tiny_study, tmp_path):
    from kinetoscope.suites.reversal import run_reversal_suite

    run = tiny_study / "runs" / "cnn3d-h2"
    report = run_reversal_suite([run], tmp_path / "rev")
    rows = list(csv.DictReader(open(tmp_path / "rev" / "reversal.csv")))
    summary = json.loads((run / "summary.json").read_text())["evaluations"]
    assert float(rows[0]["original"]) == pytest.approx(summary["val"]["accuracy"])
    assert float(rows[0]["reversed"]) == pytest.approx(summary["val-reversed"]["accuracy"])
    assert "Reversal" in report.read_text()


def test_shape_texture_suite_on_dot_clips_with_known_masks(tiny_study, tmp_path):
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.suites.reversal import run_shape_texture_suite
    from kinetoscope.synth.domains import make_domain_datasets

    source = DatasetStore(tiny_study / "data" / "2dot")
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for record in source.records():  # the dot is the actor: its mask is every lit pixel
        np.save(masks_dir / f"{record.video_id}.npy", source.read_frames(record.video_id)[..., 0] > 0)
    make_domain_datasets(source.root, tmp_path / "domains", masks_dir=masks_dir, blur_sigma=1.0)
    report = run_shape_texture_suite([tiny_study / "runs" / "cnn3d-h2"], tmp_path / "domains",
                                     tmp_path / "st", split="val")
    rows = list(csv.DictReader(open(tmp_path / "st" / "shape_texture.csv")))
    assert rows[0]["run"] == "cnn3d-h2"
    row = {k: float(v) for k, v in rows[0].items() if k not in ("run", "star") and v != ""}
    assert set(row) >= {"V", "S1", "S2", "T"}
    for ratio in ("S1/V", "S2/V", "T/V", "T/S1"):  # each ratio is the quotient of its two accuracies
        num, den = ratio.split("/")
        if row[den] > 0:
            assert row[ratio] == pytest.approx(row[num] / row[den])
    assert "S1/V" in report.read_text()


def test_appearance_free_suite_table_has_rgb_af_and_delta(motion_dataset, tmp_path):
    from kinetoscope.config import RunConfig
    from kinetoscope.suites.appearance_free import run_appearance_free_suite

    report = run_appearance_free_suite(motion_dataset, tmp_path / "af", models=("cnn3d",),
                                       model_options={"cnn3d": {"hidden": 2}},
                                       train={"max_epochs": 1, "batch_size": 16})
    rows = list(csv.DictReader(open(tmp_path / "af" / "table.csv")))
    model = rows[0]
    assert model["model"] == "cnn3d" and model["f×r"] == "8×1"
    assert float(model["delta"]) == pytest.approx(float(model["rgb"]) - float(model["appearance_free"]))
    assert rows[-1]["model"] == "single-frame probe"
    leakage = json.loads((tmp_path / "af" / "leakage.json").read_text())
    assert leakage["probes"]["appearance_free"]["chance"] == pytest.approx(0.5)
    assert leakage["settings"]["frames_per_video"] == 4
    assert "RGB vs appearance-free" in report.read_text()

    # a re-run with the same settings reuses the finished runs; a changed option retrains, never reuses
    weights = tmp_path / "af" / "runs" / "cnn3d-rgb" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    run_appearance_free_suite(motion_dataset, tmp_path / "af", models=("cnn3d",), af_data=tmp_path / "af" /
                              "data" / "appearance-free", model_options={"cnn3d": {"hidden": 2}},
                              train={"max_epochs": 1, "batch_size": 16})
    assert weights.stat().st_mtime_ns == stamp
    run_appearance_free_suite(motion_dataset, tmp_path / "af", models=("cnn3d",), af_data=tmp_path / "af" /
                              "data" / "appearance-free", model_options={"cnn3d": {"hidden": 3}},
                              train={"max_epochs": 1, "batch_size": 16})
    assert weights.stat().st_mtime_ns != stamp
    assert RunConfig.load(weights.parent).model.options["hidden"] == 3
    with pytest.raises(ValueError, match=r"\['hidden'\] name no model"):  # not silently ignored
        run_appearance_free_suite(motion_dataset, tmp_path / "af", models=("cnn3d",), model_options={"hidden": 2})
