"""``kinetoscope cv`` (Broomé 2022 §3.2): leave-one-subject-out folds, no subject leaks, resume, and the
end-to-end check on mp4 videos of synthetic subjects whose class is visible only in motion."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from kinetoscope.config import build_config
from kinetoscope.data.index import VideoRecord


def write_subject_videos(
    folder: Path,
    subjects: int = 6,
    per_class: int = 2,
    frames: int = 12,
    size: int = 32,
    fps: float = 8.0,
    speed: int = 2,
    seed: int = 0,
) -> Path:
    """mp4 videos (PyAV) of ``subjects`` synthetic subjects and ``annotations.csv``.

    Every video pans over a smooth random texture; the class is the pan direction (``left`` /
    ``right``, ``speed`` px per frame). Each subject has its own tint, drawn from the same
    distribution for both classes, so no single frame tells the classes apart: only motion does.
    Subjects are named ``1`` ... ``subjects`` as in the PF data."""
    from kinetoscope.data.video import write_video
    from kinetoscope.flow.synthetic import smooth_texture

    rng = np.random.default_rng(seed)
    rows = []
    for s in range(1, subjects + 1):
        tint = rng.uniform(0.4, 1.0, size=3)
        for label, sign in (("left", -1), ("right", 1)):
            for i in range(per_class):
                texture = smooth_texture(size, size + speed * frames, seed=int(rng.integers(1 << 30)))
                start = 0 if sign > 0 else speed * frames
                video = np.stack(
                    [
                        texture[:, start + sign * speed * t : start + sign * speed * t + size]
                        for t in range(frames)
                    ]
                )
                video = (video[..., None] * tint * 255).astype(np.uint8)
                name = f"s{s}_{label}_{i}.mp4"
                write_video(folder / name, video, fps=fps)
                rows.append(f"{name},{label},{s}")
    (folder / "annotations.csv").write_text("path,label,subject\n" + "\n".join(rows) + "\n")
    return folder / "annotations.csv"


def prepared_subjects(tmp_path: Path, size: int = 32, **kwargs) -> Path:
    from kinetoscope.data.prepare import prepare_dataset

    annotations = write_subject_videos(tmp_path / "videos", size=size, **kwargs)
    out = tmp_path / "data"
    summary = prepare_dataset(
        annotations.parent, out, annotations=annotations, format="csv", size=size, flow=True
    )
    assert summary.failed == 0
    return out


def cv_config(root: Path, out: Path, model: str, **model_options) -> object:
    return build_config(
        {
            "name": model,
            "out_dir": str(out),
            "data": {"root": str(root), "frames": 4, "sampling": "dense", "stride": 4, "batch_size": 8},
            "model": {"name": model, "hidden": 4, "blocks": 2, "kernel_size": 3, **model_options},
            "optim": {"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
            "train": {"max_epochs": 8, "patience": 3, "monitor": "val_loss", "progress": False},
        }
    )


def _records(subjects_per_label: dict[str, list[str]]) -> list[VideoRecord]:
    return [
        VideoRecord(video_id=f"{s}_{lab}_{i}", label=lab, subject=s, num_frames=10)
        for lab, subjects in subjects_per_label.items()
        for s in subjects
        for i in range(2)
    ]


def test_broome_validation_rule_uses_subject_5_and_1_when_5_tests() -> None:
    from kinetoscope.data.splits import leave_one_subject_out
    from kinetoscope.suites.cv import validation_priority

    records = _records({"pain": list("123456"), "none": list("123456")})
    folds = leave_one_subject_out(records, validation_priority(records, ["none", "pain"]))
    val = {f.test_subjects[0]: f.val_subjects for f in folds}
    assert val == {"1": ["5"], "2": ["5"], "3": ["5"], "4": ["5"], "5": ["1"], "6": ["5"]}
    for fold in folds:
        assert len(fold.train_subjects) == 4
        assert not set(fold.train_subjects) & (set(fold.val_subjects) | set(fold.test_subjects))


def test_without_subjects_5_and_1_the_most_balanced_remaining_subject_validates() -> None:
    from kinetoscope.suites.cv import validation_priority

    # "b" is balanced (2 videos per class); "a" has only pain; "c" 2:1
    records = _records({"pain": ["a", "b", "c"], "none": ["b"]}) + [
        VideoRecord(video_id="c_none", label="none", subject="c", num_frames=10)
    ]
    assert validation_priority(records, ["none", "pain"]) == ["b", "c", "a"]
    assert validation_priority(records, ["none", "pain"], "next") is None
    assert validation_priority(records, ["none", "pain"], ["c", "a"]) == ["c", "a"]


def test_fold_config_restricts_every_part_to_its_subjects_and_changes_the_seed(tmp_path: Path) -> None:
    from kinetoscope.data.splits import Fold
    from kinetoscope.suites.cv import fold_config

    base = cv_config(tmp_path, tmp_path, "convlstm1")
    fold = Fold("test=3", [], [], [], ["1", "2", "4", "6"], ["5"], ["3"])
    config = fold_config(base, fold, repeat=2, folds_dir=tmp_path / "folds")
    assert config.data.train_subjects == ["1", "2", "4", "6"]
    assert config.data.val_subjects == ["5"] and config.data.test_subjects == ["3"]
    assert config.data.val_split is None
    assert config.train.seed == base.train.seed + 2
    assert config.run_dir == tmp_path / "folds" / "r2-test=3"


def test_check_no_leak_raises_on_a_shared_subject() -> None:
    from kinetoscope.suites.cv import SubjectLeakError, check_no_leak

    summary = {"data": {"train_subjects": ["1", "2"], "val_subjects": ["5"]}}
    check_no_leak(summary, ["3"], "fold")
    with pytest.raises(SubjectLeakError, match=r"\['2'\] in both train and test"):
        check_no_leak(summary, ["2"], "fold")
    with pytest.raises(SubjectLeakError, match="val and test"):
        check_no_leak(summary, ["5"], "fold")


def _write_tiny_subject_store(root: Path, subjects: int = 3) -> Path:
    """A cached dataset (no video decoding) of ``subjects`` subjects, 2 videos per class each."""
    from conftest import write_motion_dataset

    write_motion_dataset(root, per_class=2 * subjects, frames=8, size=16)
    from kinetoscope.data.cache import DatasetStore

    store = DatasetStore(root)
    records = [
        VideoRecord(**{**r.__dict__, "subject": str(1 + i % subjects)})
        for i, r in enumerate(sorted(store.records(), key=lambda r: r.video_id))
    ]
    store.write_records(records)
    return root


def _tiny_config(root: Path, out: Path) -> object:
    return build_config(
        {
            "name": "tiny",
            "out_dir": str(out),
            "data": {"root": str(root), "frames": 4, "sampling": "dense", "stride": 4, "batch_size": 8},
            "model": {"name": "convlstm1", "hidden": 2, "blocks": 1, "kernel_size": 3},
            "optim": {"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
            "train": {"max_epochs": 1, "patience": 1, "progress": False},
        }
    )


def test_interrupted_cv_resumes_and_never_reruns_a_finished_fold(tmp_path: Path, monkeypatch) -> None:
    import importlib

    from kinetoscope.suites.cv import run_cv

    fit_module = importlib.import_module("kinetoscope.train.fit")  # the module, not the re-exported function

    root = _write_tiny_subject_store(tmp_path / "data")
    config = _tiny_config(root, tmp_path / "runs")
    real_fit = fit_module.fit
    calls: list[str] = []

    def failing_fit(cfg, **kwargs):
        calls.append(cfg.name)
        if cfg.name == "r0-test=3":
            raise KeyboardInterrupt("simulated interruption")
        return real_fit(cfg, **kwargs)

    monkeypatch.setattr(fit_module, "fit", failing_fit)
    with pytest.raises(KeyboardInterrupt):
        run_cv(config, out_dir=tmp_path / "cv", threads=1)
    assert calls == ["r0-test=1", "r0-test=2", "r0-test=3"]
    done = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "cv" / "folds").glob("*/fold.json")}
    assert sorted(done) == ["r0-test=1", "r0-test=2"]

    calls.clear()
    monkeypatch.setattr(fit_module, "fit", lambda cfg, **kw: (calls.append(cfg.name), real_fit(cfg, **kw))[1])
    out = run_cv(config, out_dir=tmp_path / "cv", threads=1)
    assert calls == ["r0-test=3"]  # only the interrupted fold trains again
    for name, mtime in done.items():
        assert (out / "folds" / name / "fold.json").stat().st_mtime_ns == mtime
    with open(out / "folds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["test_subject"] for r in rows] == ["1", "2", "3"]
    assert (out / "report.html").is_file()

    calls.clear()
    run_cv(config, out_dir=tmp_path / "cv", threads=1)  # everything done: nothing trains, tables are rebuilt
    assert calls == []


def test_cv_tables_hold_mean_and_std_over_folds(tmp_path: Path) -> None:
    from kinetoscope.suites.cv import write_tables

    def result(repeat: int, subject: str, f1: float) -> dict:
        m = {"macro_f1": f1, "accuracy": f1, "n": 4}
        return {
            "name": f"r{repeat}-test={subject}",
            "test_subjects": [subject],
            "val_subjects": ["5"],
            "best_epoch": 3,
            "clip": m,
            "video": {k: m for k in ("vote", "mean", "topk")},
        }

    results = [result(0, "1", 0.6), result(0, "2", 0.8), result(1, "1", 0.7), result(1, "2", 0.9)]
    summary = write_tables(tmp_path, results, repeats=2)
    assert summary["clip"]["macro_f1"]["mean"] == pytest.approx(0.75)
    assert summary["clip"]["macro_f1"]["std"] == pytest.approx(np.std([0.6, 0.8, 0.7, 0.9], ddof=1))
    # Broomé 2022 Table 3.4: std over test subjects within a repeat, averaged over repeats
    assert summary["clip"]["macro_f1"]["std_over_subjects"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert summary["mean_best_epoch"] == 4  # 1-based: epoch index 3 is the 4th epoch
    with open(tmp_path / "subjects.csv", newline="") as fh:
        rows = {r["test_subject"]: r for r in csv.DictReader(fh)}
    assert float(rows["1"]["clip_f1_mean"]) == pytest.approx(0.65, abs=1e-6)
    assert float(rows["2"]["clip_f1_std"]) == pytest.approx(np.std([0.8, 0.9], ddof=1), abs=1e-6)


def _e2e(tmp_path: Path) -> dict[str, dict]:
    from kinetoscope.suites.cv import run_cv

    root = prepared_subjects(tmp_path)
    results = {}
    for model in ("convlstm2", "convlstm1"):
        out = run_cv(
            cv_config(root, tmp_path / "runs", model),
            protocol="loso",
            out_dir=tmp_path / f"cv-{model}",
            threads=1,
        )
        results[model] = json.loads((out / "summary.json").read_text())
        for fold in (out / "folds").glob("*/fold.json"):
            info = json.loads(fold.read_text())
            train, val, test = (
                set(info["train_subjects"]),
                set(info["val_subjects"]),
                set(info["test_subjects"]),
            )
            assert len(train) == 4 and len(val) == 1 and len(test) == 1
            assert not (train & val or train & test or val & test)
            with open(fold.parent / "test_predictions.csv", newline="") as fh:
                assert {r["subject"] for r in csv.DictReader(fh)} == test
    return results


def test_two_stream_beats_chance_and_rgb_only_on_motion_defined_subjects(tmp_path: Path) -> None:
    results = _e2e(tmp_path)
    two, rgb = (
        results["convlstm2"]["clip"]["macro_f1"]["mean"],
        results["convlstm1"]["clip"]["macro_f1"]["mean"],
    )
    print(f"LOSO clip macro-F1: convlstm2 (rgb+flow) {two:.3f}, convlstm1 (rgb) {rgb:.3f}")
    assert two >= 0.8
    assert rgb < two


def test_evaluate_scores_counts_clips_and_aggregates_each_video() -> None:
    from kinetoscope.suites.cv import evaluate_scores

    out = {  # video a (label x): 2 weak y clips, 1 confident x clip; video b (label y): 1 y clip
        "scores": np.array([[0.4, 0.6], [0.4, 0.6], [0.95, 0.05], [0.3, 0.7]]),
        "labels": np.array([0, 0, 0, 1]),
        "video_id": ["a", "a", "a", "b"],
        "subject": ["1", "1", "1", "2"],
        "clip_index": np.array([0, 1, 2, 0]),
    }
    metrics, clip_rows, video_rows = evaluate_scores(out, ["x", "y"], top_fraction=0.3)
    assert metrics["clip"]["accuracy"] == pytest.approx(0.5)
    assert [r[4] for r in clip_rows] == ["y", "y", "x", "y"]
    rows = {r[0]: r for r in video_rows}
    assert rows["a"][:4] == ["a", "1", "x", 3] and rows["b"][:4] == ["b", "2", "y", 1]
    # columns per method: pred, score_x, score_y (vote, mean, topk)
    assert rows["a"][4] == "y" and rows["a"][7] == "x" and rows["a"][10] == "x"  # vote / mean / top-1 clip
    assert rows["a"][8] == pytest.approx((0.4 + 0.4 + 0.95) / 3)
    assert metrics["video"]["vote"]["accuracy"] == pytest.approx(0.5)
    assert metrics["video"]["mean"]["accuracy"] == pytest.approx(1.0)
