"""Video-level decisions (Broomé 2022 §3.2-3.3): majority vote, mean and top-k% MIL on hand-made clip
score tables, and ``predict_videos`` on new mp4 files (CSVs and timeline)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from kinetoscope.config import build_config


def _hand_table() -> dict:
    """Video A: 3 clips, 2 of 3 say class 0. Video B: 9 mildly confident class-0 clips and one very
    confident class-1 clip — the case the MIL filter is for."""
    a = [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]
    b = [[0.6, 0.4]] * 9 + [[0.05, 0.95]]
    scores = np.array(a + b)
    return {
        "scores": scores,
        "labels": np.array([0] * 3 + [1] * 10),
        "video_id": ["A"] * 3 + ["B"] * 10,
        "subject": ["1"] * 13,
        "clip_index": np.array(list(range(3)) + list(range(10))),
    }


def test_majority_mean_and_topk_mil_on_a_hand_made_score_table() -> None:
    from kinetoscope.suites.cv import evaluate_scores

    metrics, clip_rows, video_rows = evaluate_scores(_hand_table(), ["none", "pain"], top_fraction=0.1)
    rows = {r[0]: r for r in video_rows}
    # columns: video, subject, label, clips, then per aggregation (vote, mean, topk):
    # pred, score_none, score_pain
    a, b = rows["A"], rows["B"]
    assert a[3] == 3 and b[3] == 10
    assert a[4] == "none" and a[5:7] == pytest.approx([2.5 / 3.5, 1 / 3.5])  # 2 votes + half a vote
    assert a[7] == "none" and a[8:10] == pytest.approx([1.7 / 3, 1.3 / 3])  # mean
    assert a[10] == "none" and a[11:13] == pytest.approx([0.9, 0.8])  # k = ceil(0.1 * 3) = 1
    assert b[4] == "none"  # 9 of 10 clips vote "none"
    assert b[7] == "none" and b[9] == pytest.approx((9 * 0.4 + 0.95) / 10)
    assert b[10] == "pain" and b[11:13] == pytest.approx([0.6, 0.95])  # the top 10 % (1 clip) per class
    assert metrics["video"]["vote"]["accuracy"] == 0.5
    assert metrics["video"]["topk"]["accuracy"] == 1.0
    assert metrics["clip"]["n"] == 13 and len(clip_rows) == 13


def test_topk_with_five_percent_of_forty_clips_uses_the_two_highest() -> None:
    from kinetoscope.evaluate.aggregate import aggregate_videos

    scores = np.full((40, 2), 0.5)
    scores[:, 1] = np.linspace(0.1, 0.9, 40)
    scores[:, 0] = 1 - scores[:, 1]
    _, out = aggregate_videos(["v"] * 40, scores, method="topk", top_fraction=0.05)
    assert out[0, 1] == pytest.approx((scores[-1, 1] + scores[-2, 1]) / 2)
    assert out[0, 0] == pytest.approx((scores[0, 0] + scores[1, 0]) / 2)


@pytest.fixture(scope="module")
def trained_two_stream(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny ConvLSTM-2 run on prepared mp4 videos of 3 synthetic subjects (2 epochs)."""
    from kinetoscope.data.prepare import prepare_dataset
    from kinetoscope.train.fit import fit
    from test_cv import write_subject_videos

    tmp = tmp_path_factory.mktemp("predict")
    annotations = write_subject_videos(tmp / "videos", subjects=3, per_class=1, frames=12, size=16)
    prepare_dataset(annotations.parent, tmp / "data", annotations=annotations, size=16, flow=True)
    config = build_config(
        {
            "name": "two",
            "out_dir": str(tmp / "runs"),
            "data": {
                "root": str(tmp / "data"),
                "frames": 4,
                "sampling": "dense",
                "stride": 4,
                "batch_size": 8,
                "train_subjects": ["1", "2"],
                "val_subjects": ["3"],
            },
            "model": {"name": "convlstm2", "hidden": 2, "blocks": 1, "kernel_size": 3},
            "optim": {"name": "adam", "lr": 1e-2, "weight_decay": 0.0},
            "train": {"max_epochs": 1, "patience": 1, "progress": False},
        }
    )
    return fit(config), annotations.parent


def test_predict_videos_writes_clip_and_video_tables_and_a_timeline(
    trained_two_stream, tmp_path: Path
) -> None:
    from kinetoscope.suites.predict import AGGREGATIONS, predict_videos

    run_dir, videos = trained_two_stream
    paths = [videos / "s1_left_0.mp4", videos / "s2_right_0.mp4"]
    results = predict_videos(run_dir, paths, tmp_path / "out", window=4, stride=2)
    assert sorted(results) == ["s1_left_0", "s2_right_0"]
    with open(tmp_path / "out" / "clip_predictions.csv", newline="") as fh:
        clips = list(csv.DictReader(fh))
    starts = [float(r["start_s"]) for r in clips if r["video"] == "s1_left_0"]
    fps = 8.0  # the videos' rate; prepared without resampling
    assert starts == pytest.approx([k * 2 / fps for k in range(5)])  # (12 - 4) / 2 + 1 windows, stride 2
    for r in clips:
        assert float(r["score_left"]) + float(r["score_right"]) == pytest.approx(1.0, abs=1e-5)
    with open(tmp_path / "out" / "video_predictions.csv", newline="") as fh:
        videos_rows = list(csv.DictReader(fh))
    assert [(r["video"], r["aggregation"]) for r in videos_rows] == [
        (v, a) for v in ("s1_left_0", "s2_right_0") for a in AGGREGATIONS
    ]
    assert all(r["clips"] == "5" for r in videos_rows)
    for name in results:
        png = tmp_path / "out" / f"timeline_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_rejects_an_unknown_timeline_class(trained_two_stream, tmp_path: Path) -> None:
    from kinetoscope.suites.predict import predict_videos

    run_dir, videos = trained_two_stream
    with pytest.raises(ValueError, match="timeline_class 'pain'"):
        predict_videos(run_dir, [videos / "s1_left_0.mp4"], tmp_path, timeline_class="pain")


def test_an_unreadable_video_is_listed_in_problems_and_the_others_are_scored(
    trained_two_stream, tmp_path: Path
) -> None:
    from kinetoscope.suites.predict import predict_videos

    run_dir, videos = trained_two_stream
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    missing = tmp_path / "missing.mp4"
    results = predict_videos(run_dir, [broken, videos / "s1_left_0.mp4", missing], tmp_path / "out", window=4)
    assert sorted(results) == ["s1_left_0"]
    with open(tmp_path / "out" / "problems.csv", newline="") as fh:
        problems = list(csv.DictReader(fh))
    assert [r["path"] for r in problems] == [str(broken), str(missing)]
    assert "not a video" in problems[0]["problem"] and "file not found" in problems[1]["problem"]
    with pytest.raises(ValueError, match="none of the 1 video"):
        predict_videos(run_dir, [missing], tmp_path / "out2", window=4)
