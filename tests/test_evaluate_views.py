"""Multi-view testing: view geometry, fusion, and 1x1 equal to the standard evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.sampling import uniform_indices
from kinetoscope.evaluate.views import (
    ViewDataset,
    evaluate_views,
    fuse,
    parse_views,
    spatial_boxes,
    temporal_views,
)


def test_parse_views_and_presets():
    assert parse_views("3x3") == (3, 3) and parse_views("10x1") == (10, 1)
    assert parse_views("stergiou-30") == (10, 3) and parse_views("feichtenhofer-25") == (25, 2)
    for bad in ("3", "3x4", "0x1", "big"):
        with pytest.raises(ValueError, match="--views"):
            parse_views(bad)


def test_temporal_views_shift_uniform_sampling_and_spread_windows():
    assert np.array_equal(temporal_views(40, 5, 1, uniform=True)[0], uniform_indices(40, 5))
    views = temporal_views(41, 5, 2, uniform=True)  # spacing 10: shifted by -2.5 and +2.5 frames
    assert views[0].tolist() == [0, 8, 18, 28, 38] and views[1].tolist() == [2, 12, 22, 32, 40]
    windows = temporal_views(30, 10, 3, uniform=False)
    assert [w[0] for w in windows] == [0, 10, 20] and all(len(w) == 10 for w in windows)
    assert temporal_views(6, 10, 2, uniform=False)[0].tolist() == [0, 1, 2, 3, 4, 5, 5, 5, 5, 5]


def test_spatial_boxes_three_along_the_long_side_and_ten_crop():
    assert spatial_boxes(10, 20, (10, 10), 3) == [(0, 0, False), (0, 5, False), (0, 10, False)]
    assert spatial_boxes(20, 10, (10, 10), 3) == [(0, 0, False), (5, 0, False), (10, 0, False)]
    ten = spatial_boxes(12, 12, (8, 8), 10)
    assert len(ten) == 10 and {(t, left) for t, left, _ in ten} == {(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)}
    assert [flip for *_, flip in ten] == [False] * 5 + [True] * 5
    with pytest.raises(ValueError, match="larger than the resized frames"):
        spatial_boxes(8, 8, (10, 10), 1)


def test_fusion_mean_max_and_vote_on_known_scores():
    scores = np.array([[[0.6, 0.4], [0.45, 0.55], [0.4, 0.6]]])  # one video, three views
    np.testing.assert_allclose(fuse(scores, "mean"), [[1.45 / 3, 1.55 / 3]])
    np.testing.assert_allclose(fuse(scores, "max"), [[0.6, 0.6]])
    assert fuse(scores, "vote").argmax() == 1  # two of three views vote for class 1


def test_flip_view_mirrors_the_clip_and_negates_horizontal_flow(tmp_path):
    store = DatasetStore(tmp_path / "d")
    frames = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    store.write_frames("v", frames)
    store.write_flow("v", np.random.default_rng(1).normal(size=(4, 8, 8, 2)).astype(np.float32))
    from kinetoscope.data.index import VideoRecord

    records = [VideoRecord(video_id="v", label="a", num_frames=4)]
    ds = ViewDataset(store, records, frames=4, temporal=1, spatial=2, uniform=True, crop=(8, 8), resize=None,
                     flow=True)
    plain, flipped = ds[0], ds[1]
    assert torch.equal(flipped["video"], plain["video"].flip(-1))
    assert torch.equal(flipped["flow"][0], -plain["flow"][0].flip(-1))
    assert torch.equal(flipped["flow"][1], plain["flow"][1].flip(-1))


def test_one_view_equals_the_standard_evaluation_and_3x3_writes_every_view(untrained_run):
    from kinetoscope.evaluate.run import predict_run

    standard = predict_run(untrained_run)
    single = evaluate_views(untrained_run, "1x1")
    assert single["accuracy"] == pytest.approx(standard["video"]["accuracy"])
    assert single["single_view_accuracy"] == pytest.approx(standard["accuracy"])
    result = evaluate_views(untrained_run, "3x3", fusion="vote")
    saved = json.loads((untrained_run / "evaluations" / "views-3x3.json").read_text())
    assert len(saved["per_view"]) == 9 and set(saved["fused_accuracy"]) == {"mean", "max", "vote"}
    assert saved["accuracy"] == pytest.approx(result["fused_accuracy"]["vote"])
    assert (untrained_run / "evaluations" / "views-3x3" / "video_predictions.csv").is_file()


def test_cli_evaluate_views_prints_single_and_fused(untrained_run):
    from typer.testing import CliRunner

    from kinetoscope.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(untrained_run), "--views", "2x2"])
    assert result.exit_code == 0, result.output
    assert "single (middle clip, centre crop)" in result.output and "fused: mean (chosen)" in result.output
