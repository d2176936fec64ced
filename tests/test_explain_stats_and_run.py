"""Explanation statistics (Mänttäri 2020 §4.3), rendering and ``explain_run`` on a run directory."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from kinetoscope.explain.stats import blob_statistics, comparison_table, frame_blobs, welch_test


def test_component_blobs_are_8_connected_components_of_the_normalised_map():
    frame = np.zeros((9, 9), dtype=np.float32)
    frame[0, 0] = frame[1, 1] = 2.0  # diagonal neighbours: one blob under 8-connectivity
    frame[6:9, 6:9] = 1.5  # a 3x3 blob centred at (7, 7)
    frame[4, 0] = 0.5  # below half the maximum after min-max: not salient
    blobs = sorted(frame_blobs(frame, detector="components"))
    assert [b[0] for b in blobs] == [2.0, 9.0]
    stats = blob_statistics(np.stack([frame, np.zeros_like(frame)]), detector="components")
    assert stats["blob_count"] == 1.0  # two blobs in frame 0, none in the constant frame 1
    assert stats["blob_size"] == pytest.approx(5.5)
    # centres (0.5, 0.5) and (7, 7); frame centre (4, 4)
    assert stats["centre_distance"] == pytest.approx((math.hypot(3.5, 3.5) + math.hypot(3, 3)) / 2)
    with pytest.raises(ValueError, match="detector"):
        frame_blobs(frame, detector="mser")


def disk(size: int, centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return ((yy - centre[1]) ** 2 + (xx - centre[0]) ** 2 <= radius**2).astype(np.float32)


def test_simple_blob_detector_is_the_default_and_finds_planted_blobs():
    """OpenCV's SimpleBlobDetector (Mänttäri 2020 Table 3): two planted disks and a faint bump below half
    the range give two blobs at the disks' centres, sized like the disks."""
    frame = disk(64, (20, 16), 6) + 0.8 * disk(64, (40, 44), 8)
    yy, xx = np.mgrid[0:64, 0:64]
    frame += 0.1 * np.exp(-((yy - 50) ** 2 + (xx - 10) ** 2) / 20)  # not salient
    blobs = sorted(frame_blobs(frame), key=lambda b: b[0])  # default detector
    assert len(blobs) == 2
    (small_area, *small_xy), (large_area, *large_xy) = blobs
    assert small_xy == pytest.approx([20, 16], abs=0.5) and large_xy == pytest.approx([40, 44], abs=0.5)
    assert small_area == pytest.approx(math.pi * 36, rel=0.3) and large_area == pytest.approx(math.pi * 64, rel=0.3)
    stats = blob_statistics(np.stack([frame, np.zeros_like(frame)]))
    assert stats["blob_count"] == 1.0
    centre = (63 / 2, 63 / 2)
    expected = (math.hypot(20 - centre[0], 16 - centre[1]) + math.hypot(40 - centre[0], 44 - centre[1])) / 2
    assert stats["centre_distance"] == pytest.approx(expected, abs=0.5)
    # a blob larger than OpenCV's default 5000 px area cap is still found
    big = frame_blobs(disk(128, (64, 64), 45))
    assert len(big) == 1 and big[0][0] == pytest.approx(math.pi * 45**2, rel=0.3)


def test_welch_t_test_and_table_shaped_like_tables_3_and_4():
    from scipy.stats import ttest_ind

    a, b = [1.0, 2.0, 3.0, 4.0, float("nan")], [2.0, 4.0, 6.0, 8.0, 10.0]
    result = welch_test(a, b)
    expected = ttest_ind([1, 2, 3, 4], b, equal_var=False)
    assert result["p"] == pytest.approx(expected.pvalue) and result["n_a"] == 4
    header, rows = comparison_table({"I3D": {"mask_length": a, "drop_ratio": a},
                                     "C-LSTM": {"mask_length": b, "drop_ratio": b}})
    assert header == ["model", "mask length", "drop ratio"]
    assert rows[0][0] == "I3D" and rows[0][1].startswith("2.5±")
    assert rows[2][0] == "Welch p" and float(rows[2][1]) == pytest.approx(expected.pvalue, rel=0.05)


def test_explain_run_writes_gifs_sheets_index_and_statistics(untrained_run):
    from kinetoscope.explain import explain_run, explanations_section

    out = explain_run(untrained_run, method="temporal-mask,gradcam", clips=3, iterations=20)
    assert out == untrained_run / "explanations"
    with open(out / "index.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({r["method"] for r in rows}) == ["gradcam", "temporal-mask"] and len(rows) == 6
    assert {r["label"] for r in rows} == {"left", "right"}  # clips taken across classes
    mask_row = next(r for r in rows if r["method"] == "temporal-mask")
    assert 0 <= int(mask_row["mask_length"]) <= 8 and float(mask_row["original_score"]) > 0
    assert mask_row["protocol"] == "paper" and mask_row["iterations"] == "20"  # fixed, every clip
    gif = Image.open(out / mask_row["gif"])
    assert gif.n_frames == 8 and gif.width > 3 * 64  # three panels side by side
    assert (out / mask_row["sheet"]).is_file()
    arrays = np.load(out / mask_row["arrays"])
    assert arrays["mask"].shape == (8,)
    stats = (out / "statistics.json").read_text()
    assert "mask_length" in stats and "blob_count" in stats
    # explaining the same clips again replaces their rows instead of duplicating them
    explain_run(untrained_run, method="gradcam", clips=3)
    with open(out / "index.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    section = explanations_section(untrained_run)
    assert section.count("data:image/gif;base64,") == 3 and "mask length" in section
    assert "paper protocol: 20 fixed Adam iterations per clip (the paper: 300)" in section


def test_explain_run_takes_the_validation_subjects_of_a_subject_split_run(untrained_run, motion_dataset):
    from kinetoscope.explain import explain_run

    # a leave-subjects-out run: its validation part is subject s1 (videos i % 4 == 1), not the split column
    (untrained_run / "config.yaml").write_text(yaml.safe_dump({"data": {
        "root": str(motion_dataset), "val_split": "val", "val_subjects": ["s1"], "frames": 8}}))
    out = explain_run(untrained_run, method="gradcam", clips=6, render=False)
    with open(out / "index.csv") as fh:
        videos = [r["video_id"] for r in csv.DictReader(fh)]
    assert len(videos) == 6 and all(int(v.split("_")[1]) % 4 == 1 for v in videos)


def test_explain_run_rejects_unknown_methods_and_options(untrained_run):
    from kinetoscope.explain import explain_run

    with pytest.raises(KeyError, match="temporal-mask"):
        explain_run(untrained_run, method="temporal-masks", clips=1)
    with pytest.raises(ValueError, match="no_such_option"):
        explain_run(untrained_run, method="gradcam", clips=1, no_such_option=3)
    with pytest.raises(KeyError, match="nope"):
        explain_run(untrained_run, method="gradcam", clips=["nope"])


def test_gif_has_three_panels_and_a_mask_strip(tmp_path):
    from kinetoscope.explain.render import display_frames, mask_strip, overlay_heatmap, render_gif

    frames = display_frames(np.random.default_rng(0).random((1, 4, 16, 16)))
    heat = overlay_heatmap(frames, np.ones((4, 16, 16)))
    path = render_gif(tmp_path / "x.gif", [("a", frames), ("b", heat), ("c", frames)], np.array([0, 1, 1, 0.]))
    image = Image.open(io.BytesIO(path.read_bytes()))
    assert image.n_frames == 4
    strip = mask_strip(np.array([0.0, 1.0]), 20)
    assert strip[5, 15, 0] > strip[5, 15, 1] and strip[5, 3, 1] > strip[5, 3, 0]  # red on, green off


def _mask_rows(run_dir, protocol, lengths, iterations):
    from kinetoscope.explain.run import INDEX_COLUMNS

    out = run_dir / "explanations"
    out.mkdir(parents=True)
    with open(out / "index.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        for i, (length, steps) in enumerate(zip(lengths, iterations, strict=True)):
            writer.writerow({"method": "temporal-mask", "video_id": f"v{i}", "clip_index": 0, "mask_length": length,
                             "drop_ratio": 0.1 * length + 0.03 * i, "drop_difference": 0.02 * i - 0.01,
                             "protocol": protocol, "iterations": steps})
        writer.writerow({"method": "gradcam", "video_id": "v0", "clip_index": 0, "blob_count": 2})


def test_study_report_compares_mask_lengths_and_flags_other_protocols(tmp_path):
    from scipy.stats import ttest_ind

    from kinetoscope.report.masks import mask_comparison_section

    a, b = tmp_path / "cnn3d", tmp_path / "convlstm"
    _mask_rows(a, "paper", [2, 3, 4], [300] * 3)
    _mask_rows(b, "paper", [6, 8, 7, 9], [300] * 4)
    section = mask_comparison_section({"3D CNN": a, "ConvLSTM": b})
    assert "paper protocol: 300 fixed Adam iterations per clip, no early stop" in section
    assert "not comparable" not in section
    assert "<td>3D CNN</td><td>3±1</td>" in section and "<td>ConvLSTM</td><td>7.5±1.3</td>" in section
    p = ttest_ind([2, 3, 4], [6, 8, 7, 9], equal_var=False).pvalue
    assert f"<td>Welch p</td><td>{p:.2g}</td>" in section
    c = tmp_path / "early"
    _mask_rows(c, "early-stop", [1, 2], [41, 87])
    assert "not comparable" in mask_comparison_section({"3D CNN": a, "early": c})
    assert mask_comparison_section({"none": tmp_path / "missing"}) == ""
