"""Metrics, robustness ratio and clip->video aggregation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kinetoscope.evaluate import aggregate_videos, classification_metrics, robustness_ratio


def test_robustness_ratio_is_target_over_best_source_validation():
    assert robustness_ratio(0.45, 0.9) == pytest.approx(0.5)
    # Table 5.6 of Broomé 2022: 3D CNN h=8, 5Dot 81.2 % vs 2Dot val 93.2 % -> rr 0.871
    assert robustness_ratio(0.812, 0.932) == pytest.approx(0.8712, abs=1e-4)
    assert math.isnan(robustness_ratio(0.3, 0.0))


def test_classification_metrics_on_known_predictions():
    labels = np.array([0, 0, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(labels, preds, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1: a: P 1/2, R 1/2 -> 0.5; b: P 2/3, R 1 -> 0.8; c: P 1, R 1/2 -> 2/3
    assert m["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 2 / 3})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_video_aggregation_mean_vote_and_topk():
    ids = ["v1", "v1", "v1", "v2"]
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    order, mean = aggregate_videos(ids, scores, "mean")
    assert order == ["v1", "v2"]
    np.testing.assert_allclose(mean[0], [1.6 / 3, 1.4 / 3])
    _, vote = aggregate_videos(ids, scores, "vote")
    # two of three clips say class 1; the winner gets half a vote more (the tie-break), then normalised
    np.testing.assert_allclose(vote, [[1 / 3.5, 2.5 / 3.5], [0.0, 1.0]])
    _, top = aggregate_videos(ids, scores, "topk", top_fraction=0.34)  # k = ceil(0.34*3) = 2
    np.testing.assert_allclose(top[0], [(0.9 + 0.4) / 2, (0.7 + 0.6) / 2])


def test_predict_run_leaves_the_callers_grad_mode_alone_and_rejects_unknown_aggregations(untrained_run):
    import torch

    from kinetoscope.evaluate import predict_run

    with pytest.raises(ValueError, match="aggregation='median'"):
        predict_run(untrained_run, aggregation="median")
    assert not (untrained_run / "evaluations").exists()  # rejected before any work was written
    with torch.no_grad():
        metrics = predict_run(untrained_run, aggregation="vote")
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled()
    assert metrics["n"] == 16 and metrics["video"]["aggregation"] == "vote"
