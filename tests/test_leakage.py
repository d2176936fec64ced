"""Leakage probes of Ilic 2024 §4.4: the single-frame network probe and the AFD5 subset selection."""

from __future__ import annotations

import numpy as np
import pytest

from kinetoscope.evaluate.leakage import (
    frame_network_probe,
    inter_class_entropy,
    probe_statistics,
    select_confusable_subset,
)


def _dataset(root, per_class: int = 24, frames: int = 4, size: int = 16):
    """Two classes whose textured square differs in brightness (appearance) and in the direction it moves
    ('bright' right, 'dark' down), so single frames and flow images (direction = colour) both tell the
    class, and appearance-free frames must not."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord

    rng = np.random.default_rng(0)
    store = DatasetStore(root)
    records = []
    for label, level, (dy, dx) in (("bright", 220, (0, 1)), ("dark", 40, (1, 0))):
        for i in range(per_class):
            video = np.full((frames, size, size, 1), 128, np.uint8)
            y, x = rng.integers(2, 6, size=2)
            texture = rng.integers(-25, 25, (6, 6))
            for t in range(frames):
                video[t, y + dy * t:y + dy * t + 6, x + dx * t:x + dx * t + 6, 0] = level + texture
            vid = f"{label}_{i:03d}"
            store.write_frames(vid, video)
            records.append(VideoRecord(video_id=vid, label=label, split="val" if i % 3 == 0 else "train",
                                       num_frames=frames, fps=10.0))
    store.write_records(records)
    store.write_meta({"name": "probe", "classes": ["bright", "dark"], "fps": 10, "size": [size, size],
                      "channels": 1, "frames": frames})
    return root


def test_probe_statistics_binomial_against_chance():
    stats = probe_statistics(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    assert stats["accuracy"] == 0.75 and stats["chance"] == 0.75 and stats["n_test"] == 4
    assert stats["ci_low"] < 0.75 < stats["ci_high"] and stats["p_value"] == pytest.approx(1.0)


def test_network_probe_reads_appearance_and_flow_images_but_not_appearance_free_frames(tmp_path):
    from kinetoscope.synth.appearance_free import make_appearance_free_dataset

    rgb = _dataset(tmp_path / "rgb")
    af = make_appearance_free_dataset(rgb, tmp_path / "af")
    options = {"depth": 18, "epochs": 3, "frames_per_video": 2, "batch_size": 32, "seed": 0}
    on_rgb = frame_network_probe(rgb, **options)
    on_flow = frame_network_probe(rgb, kind="flow", flow_root=af, **options)
    on_af = frame_network_probe(af, **options)
    assert on_rgb["accuracy"] >= 0.9 and on_rgb["p_value"] < 0.01
    assert on_flow["accuracy"] >= 0.9 and "flow images" in on_flow["classifier"]
    assert on_af["ci_low"] <= on_af["chance"] <= on_af["ci_high"]  # at chance
    assert on_rgb["n_test"] == 16 and on_rgb["n_train"] == 32 * 2


def test_network_probe_takes_imported_weights_and_refuses_bad_ones(tmp_path):
    import torch

    from kinetoscope.models.twostream import FrameResNet
    from kinetoscope.models.weights import WeightMismatchError, save_safetensors

    rgb = _dataset(tmp_path / "rgb", per_class=6)
    torch.manual_seed(0)
    save_safetensors(FrameResNet(18, num_classes=1000), tmp_path / "imagenet.safetensors")  # other head size
    result = frame_network_probe(rgb, weights=tmp_path / "imagenet.safetensors", epochs=1, frames_per_video=1)
    assert "imported" in result["classifier"]
    save_safetensors(FrameResNet(34, num_classes=1000), tmp_path / "r34.safetensors")
    with pytest.raises(WeightMismatchError, match="layer1.2"):
        frame_network_probe(rgb, weights=tmp_path / "r34.safetensors", epochs=1)
    with pytest.raises(ValueError, match="probe kind"):
        frame_network_probe(rgb, kind="depth")


def test_confusable_subset_finds_the_planted_mutually_confused_classes():
    rng = np.random.default_rng(0)
    k = 10
    confusion = np.diag(rng.integers(80, 100, k)).astype(float)  # mostly well-recognised classes
    confusion += rng.integers(0, 3, (k, k))
    planted = [1, 3, 4, 7, 8]
    for i in planted:
        for j in planted:
            if i != j:
                confusion[i, j] += 12  # diagonal share ~ 0.6: above min_acc, but confused with each other
    confusion[9] = 10  # class 9 is confused with everything, but below 50 % accurate: excluded
    chosen = select_confusable_subset(confusion, k=5, min_acc=0.5)
    assert sorted(chosen) == planted
    rows = confusion / confusion.sum(1, keepdims=True)
    assert [rows[i, i] for i in chosen] == sorted((rows[i, i] for i in chosen), reverse=True)
    greedy = select_confusable_subset(confusion, k=5, min_acc=0.5, max_combinations=1)
    assert sorted(greedy) == planted
    assert inter_class_entropy(np.ones((3, 3)), [0, 1, 2]) == pytest.approx(np.log(3))
    assert inter_class_entropy(np.eye(3), [0, 1, 2]) == 0
    with pytest.raises(ValueError, match="only 1 classes reach"):
        select_confusable_subset(np.eye(3) * [[1], [0], [0]] + 0.1, k=2)


def test_appearance_free_suite_reports_the_network_probes_beside_its_table(tmp_path):
    import csv
    import json

    from kinetoscope.suites.appearance_free import run_appearance_free_suite

    rgb = _dataset(tmp_path / "rgb", per_class=9)
    report = run_appearance_free_suite(rgb, tmp_path / "af", models=("cnn3d",),
                                       model_options={"cnn3d": {"hidden": 2, "blocks": 2}},
                                       train={"max_epochs": 1, "batch_size": 8}, network_probe=True,
                                       probe_options={"epochs": 1, "batch_size": 16})
    rows = {r["model"]: r for r in csv.DictReader(open(tmp_path / "af" / "table.csv"))}
    net = rows["single-frame ResNet probe"]
    assert float(net["delta"]) == pytest.approx(float(net["rgb"]) - float(net["appearance_free"]))
    assert "single-frame ResNet probe, flow images" in rows
    probes = json.loads((tmp_path / "af" / "leakage.json").read_text())["probes"]
    assert {"rgb_network", "appearance_free_network", "flow_network"} <= set(probes)
    assert probes["flow_network"]["kind"] == "flow"
    text = report.read_text()
    assert "flow images" in text and "ResNet-18 on single frames" in text
