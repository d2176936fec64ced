"""Detect & Track model, training on frame pairs, evaluation before/after linking (Feichtenhofer 2017 Ch. 8)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kinetoscope.models import create_model


def target(boxes, labels, ids):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels),
            "ids": torch.tensor(ids)}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("detect_track_cpu", 3, width=8, head_channels=16, k=3)


def test_document_scale_heads_have_the_documented_shapes():
    model = create_model("detect_track", 30)
    assert model.trunk.depth == 101
    assert model.cls_maps.out_channels == 7 * 7 * 31 and model.reg_maps.out_channels == 4 * 7 * 7  # k = 7
    assert model.rpn_cls.out_channels == 15  # 5 scales x 3 ratios
    assert model.reduce.dilation == (6, 6) and model.reduce.out_channels == 512
    assert model.corr4.max_displacement == 8 and model.corr3.stride == 2
    assert model.track_maps.in_channels == 3 * 17 * 17 + 2 * 4 * 49


def test_conv5_keeps_stride_16(tiny):
    maps = tiny.features(torch.randn(1, 3, 2, 96, 80))
    assert maps["conv4"].shape[-2:] == maps["conv5"].shape[-2:] == (6, 5)
    assert maps["conv3"].shape[-2:] == (12, 10) and maps["cls_maps"].shape == (2, 9 * 4, 6, 5)


def test_training_step_gives_all_losses_and_tracks_only_objects_in_both_frames(tiny):
    frames = torch.randn(2, 3, 2, 64, 64)
    both = [target([[8, 8, 30, 30]], [1], [5]), target([[10, 9, 32, 31]], [1], [5])]
    disjoint = [target([[8, 8, 30, 30]], [2], [1]), target([[40, 40, 60, 60]], [3], [2])]
    losses = tiny(frames, [both, disjoint])
    assert set(losses) == {"rpn_cls", "rpn_reg", "cls", "reg", "track"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["track"] > 0
    none = tiny(frames, [disjoint, disjoint])
    assert none["track"] == 0  # no object appears in both frames: no track targets
    sum(none.values()).backward()  # still differentiable


def test_joint_training_fits_a_planted_pair():
    torch.manual_seed(0)
    model = create_model("detect_track_cpu", 2, width=8, head_channels=16, k=3)
    frames = torch.zeros(1, 3, 2, 64, 64)
    frames[0, :, 0, 10:30, 10:30] = 2.0
    frames[0, :, 1, 14:34, 12:32] = 2.0
    targets = [[target([[10, 10, 30, 30]], [1], [0]), target([[12, 14, 32, 34]], [1], [0])]]
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(25):
        losses = model(frames, targets)
        loss = sum(losses.values())
        first = first if first is not None else {k: float(v.detach()) for k, v in losses.items()}
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(losses["track"]) < 0.5 * first["track"]
    assert float(losses["cls"]) < 0.5 * first["cls"]


def test_detect_video_chunks_agree_and_give_one_tracklet_set_per_transition(tiny):
    tiny.eval()
    video = torch.randn(3, 5, 64, 64)
    whole, tracks_whole = tiny.detect_video(video, chunk=8)
    parts, tracks_parts = tiny.detect_video(video, chunk=2)
    assert len(whole) == 5 and len(tracks_whole) == 4
    for a, b in zip(whole, parts, strict=True):
        assert torch.allclose(a.boxes, b.boxes, atol=1e-4) and torch.allclose(a.scores, b.scores, atol=1e-5)
    for a, b in zip(tracks_whole, tracks_parts, strict=True):
        assert torch.allclose(a.target, b.target, atol=1e-4)
    assert all(len(d) <= 25 * 3 for d in whole)
    _, untracked = tiny.detect_video(video, track=False)
    assert len(untracked) == 4 and all(len(t.source) == 0 for t in untracked)


def test_train_evaluate_explain_report_a_tiny_run(tmp_path):
    from kinetoscope.evaluate.run import predict_run
    from kinetoscope.explain import explain_run
    from kinetoscope.report.html import build_report
    from kinetoscope.synth.moving_objects import generate_moving_objects
    from kinetoscope.train.detect_track import fit_detect_track

    data = generate_moving_objects(tmp_path / "mo", 4, frames=4, size=64, empty_videos=1, gifs=0, val_fraction=0.5)
    run = fit_detect_track(data, tmp_path / "run", steps=3, threads=None, log_every=1,
                           model_options={"width": 8, "head_channels": 16, "k": 3})
    assert (run / "model.safetensors").is_file() and len((run / "metrics.csv").read_text().splitlines()) == 4
    metrics = predict_run(run)  # `kinetoscope evaluate` dispatches D&T runs to frame mAP
    assert {"map_detection", "map_linked", "map_linked_without_tracks"} <= set(metrics)
    assert 0 <= metrics["map_detection"] <= 1 and 0 <= metrics["map_linked"] <= 1
    assert (run / "evaluations" / "val" / "detections.csv").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert "map_linked" in summary["evaluations"]["val"]
    empty = generate_moving_objects(tmp_path / "empty", 2, frames=3, size=64, empty_videos=2, split="test", gifs=0)
    nothing = predict_run(run, data=empty, name="empty")  # videos without objects: no error, no AP to report
    assert math.isnan(nothing["map_detection"]) and nothing["frames_scored"] == 6
    tubes = explain_run(run, clips=2)
    assert (tubes / "index.csv").is_file() and list(tubes.glob("*.png"))
    assert "mAP D&amp;T linked" in build_report(run).read_text()
    resumed = fit_detect_track(data, tmp_path / "run", steps=5, threads=None, log_every=1, resume=True,
                               model_options={"width": 8, "head_channels": 16, "k": 3})
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_from_step"] == 3 and summary["steps"] == 5
    assert len((run / "metrics.csv").read_text().splitlines()) == 6  # the loss history carried over
