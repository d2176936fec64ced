"""The privacy–utility protocol (Ilic 2024 §5.4, Table 5.2) on synthetic KTH-style actors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from kinetoscope.data.cache import DatasetStore
from kinetoscope.suites.privacy import data_view, f_lambda, run_privacy_suite
from kinetoscope.synth.actors import actor_clip, generate_actors
from kinetoscope.synth.privacy import ColourKeyExtractor, TemplateLibrary, make_template


def test_f_lambda_is_the_documents_trade_off():
    assert f_lambda(0.8867, 0.0546) == pytest.approx(0.916, abs=1e-3)  # Table 5.2, KTH "Ours": 0.92
    assert f_lambda(0.9015, 0.9187) == pytest.approx(0.491, abs=1e-3)  # KTH "Original": 0.49
    assert f_lambda(1.0, 1.0, lam=0.0) == 1.0 and f_lambda(1.0, 1.0, lam=1.0) == 0.0
    with pytest.raises(ValueError, match="λ"):
        f_lambda(0.5, 0.5, lam=1.5)


def test_actors_separate_identity_from_action():
    a, mask_a = actor_clip(0, "walk-right", frames=6, size=64, rng=np.random.default_rng(1))
    b, _ = actor_clip(1, "walk-right", frames=6, size=64, rng=np.random.default_rng(1))
    assert a.shape == (6, 64, 64, 3) and mask_a.shape == (6, 64, 64)
    assert mask_a.sum(axis=(1, 2)).std() == 0  # same figure size in every frame
    np.testing.assert_array_equal(a[~mask_a], b[~mask_a])  # same background and motion, other subject
    assert (a[mask_a] != b[mask_a]).any()  # the subject is in the figure's appearance
    xs = [np.nonzero(m.any(0))[0][0] for m in mask_a]
    assert np.all(np.diff(xs) > 0)  # walking right


def test_data_view_resplits_per_subject_and_action_and_relabels_by_subject(tmp_path):
    root = generate_actors(tmp_path / "d", subjects=2, actions=("jump", "sway"), repeats=3, frames=2, size=32)
    store = DatasetStore(root)
    store.write_records([r.__class__(**{**r.__dict__, "split": "train" if r.subject == "s00" else "val"})
                         for r in store.records()])  # a subject-exclusive split, like KTH's official one
    with pytest.raises(ValueError, match=r"subjects \['s01'\] have no training videos.*resplit"):
        run_privacy_suite(root, tmp_path / "suite", methods=["blur-weak"])
    view = DatasetStore(data_view(root, tmp_path / "v", by="subject", resplit=True))
    records = view.records()
    assert view.classes == ["s00", "s01"] and {r.label for r in records} == {"s00", "s01"}
    val = sorted(r.video_id for r in records if r.split == "val")
    assert val == ["s00_jump_2", "s00_sway_2", "s01_jump_2", "s01_sway_2"]
    assert (view.root / "frames").is_symlink()
    np.testing.assert_array_equal(view.read_frames("s01_jump_0"), store.read_frames("s01_jump_0"))


def test_suite_tables_action_and_identity_per_method(tmp_path):
    root = generate_actors(tmp_path / "data", subjects=3, actions=("walk-right", "walk-left"), repeats=2, frames=4,
                           size=32, masks_dir=tmp_path / "masks")
    (tmp_path / "masks" / "s02_walk-left_1.npy").unlink()  # one val video without a mask
    extractor = ColourKeyExtractor()
    frame = np.asarray(DatasetStore(root).read_frames("s00_walk-right_0")[0])
    ys, xs = np.nonzero(np.load(tmp_path / "masks" / "s00_walk-right_0.npy")[0])
    library = tmp_path / "lib.json"
    TemplateLibrary(library).add(make_template(frame, (int(xs.mean()), int(ys.max()) - 2), "torso", extractor))
    report = run_privacy_suite(root, tmp_path / "suite", methods=["motion-noise", "mask", "pixelate-16"],
                               library=library, templates=("torso",), extractor=extractor,
                               masks_dir=tmp_path / "masks", model_options={"cnn3d": {"hidden": 4, "blocks": 2}},
                               train={"max_epochs": 1, "batch_size": 4})
    assert report.is_file() and "privacy–utility trade-off" in report.read_text().lower()
    with open(tmp_path / "suite" / "table.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == ["clean", "motion-noise", "mask", "pixelate-16"]
    for r in rows:
        a, p = float(r["action"]), float(r["identity"])
        assert 0 <= a <= 1 and 0 <= p <= 1 and float(r["f0.5"]) == pytest.approx(f_lambda(a, p))
    study = json.loads((tmp_path / "suite" / "study.json").read_text())
    assert set(study["runs"]) == {"action", "identity"}
    assert any("mask: 1 video(s) left out" in n for n in study["notes"])
    masked = DatasetStore(tmp_path / "suite" / "data" / "mask")
    assert dict(masked.problems()).keys() == {"s02_walk-left_1"} and len(masked.records()) == 5
    summary = json.loads((tmp_path / "suite" / "runs" / "identity" / "summary.json").read_text())
    assert {"privacy-clean", "privacy-motion-noise", "privacy-mask"} <= set(summary["evaluations"])


def test_cli_suite_privacy(tmp_path):
    from typer.testing import CliRunner

    from kinetoscope.cli import app

    root = generate_actors(tmp_path / "data", subjects=2, actions=("walk-right", "jump"), repeats=2, frames=4,
                           size=32)
    result = CliRunner().invoke(app, ["suite", "privacy", str(root), "--out", str(tmp_path / "suite"), "--method",
                                      "blur-strong", "--set", "cnn3d.hidden=2", "--set", "cnn3d.blocks=2",
                                      "--set", "train.max_epochs=1"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "suite" / "table.csv", newline="") as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["clean", "blur-strong"]
    result = CliRunner().invoke(app, ["suite", "privacy", str(root), "--out", str(tmp_path / "s2"), "--method",
                                      "pixelate-8"])
    assert result.exit_code == 2 and "pixelate block must be one of (4, 16)" in result.output


def test_suite_with_the_single_frame_identity_recogniser(tmp_path):
    root = generate_actors(tmp_path / "data", subjects=2, actions=("walk-right", "jump"), repeats=2, frames=4,
                           size=32)
    options = {"cnn3d": {"hidden": 2, "blocks": 2}, "frame-resnet": {"epochs": 1, "frames_per_video": 2}}
    run_privacy_suite(root, tmp_path / "suite", identity_model="frame-resnet", methods=["pixelate-16"],
                      model_options=options, train={"max_epochs": 1})
    study = json.loads((tmp_path / "suite" / "study.json").read_text())
    assert set(study["runs"]) == {"action"} and any("frame-resnet-18" in n for n in study["notes"])
    rows = {r["method"]: r for r in study["rows"]}
    assert set(rows) == {"clean", "pixelate-16"} and all(0 <= r["identity"] <= 1 for r in rows.values())
    weights = tmp_path / "suite" / "runs" / "frame-resnet" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    run_privacy_suite(root, tmp_path / "suite", identity_model="frame-resnet", methods=["pixelate-16"],
                      model_options=options, train={"max_epochs": 1})
    assert weights.stat().st_mtime_ns == stamp  # reused
    again = {r["method"]: r for r in json.loads((tmp_path / "suite" / "study.json").read_text())["rows"]}
    assert again["clean"]["identity"] == rows["clean"]["identity"]
    with pytest.raises(ValueError, match="unknown frame-resnet option"):
        run_privacy_suite(root, tmp_path / "s2", identity_model="frame-resnet",
                          model_options={"frame-resnet": {"width": 3}})
