"""``kinetoscope features``: per-window features equal a direct forward with a hook; resumable, sharded."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.prepare import prepare_dataset
from kinetoscope.data.video import write_video
from kinetoscope.features import extract, layer_names
from kinetoscope.features.run import extract_features
from kinetoscope.models import create_model
from kinetoscope.models.checkpoint import load_run_model, save_run_model

OPTIONS = {"hidden": 4, "blocks": 2, "input_size": 32, "frames": 8}


def moving_square(path: Path, n: int, fps: float = 10.0) -> None:
    frames = np.zeros((n, 32, 32, 3), np.uint8)
    for k in range(n):
        frames[k, 8:16, (2 * k) % 24 : (2 * k) % 24 + 8] = (255, 120, 40)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=fps)


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory) -> Path:
    """Four real MP4 videos (6, 20, 31, 45 frames), prepared into a frame cache by ``data prepare``."""
    base = tmp_path_factory.mktemp("features")
    src = base / "videos"
    for name, n in (("a_short", 6), ("b_mid", 20), ("c_long", 31), ("d_longer", 45)):
        moving_square(src / ("left" if n % 2 else "right") / f"{name}.mp4", n)
    prepare_dataset(src, base / "data", format="folders")
    return base / "data"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, real_dataset: Path) -> Path:
    run = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    spec = {"name": "cnn3d", "num_classes": 2, "in_channels": 3, "options": OPTIONS, "classes": ["left", "right"]}
    save_run_model(create_model("cnn3d", 2, 3, **OPTIONS), run, spec)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(real_dataset), "frames": 8}}))
    return run


def read_windows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_features_equal_a_direct_forward_with_a_hook_and_match_windows_csv(run_dir, real_dataset, tmp_path):
    out = tmp_path / "feats"
    result = extract_features(run_dir, [real_dataset], out, "blocks.1", stride=4, batch_size=3)
    rows = read_windows(out / "windows.csv")
    store = DatasetStore(real_dataset)
    assert result["written"] == 4 and result["windows"] == len(rows)
    model, _ = load_run_model(run_dir)
    captured: list[torch.Tensor] = []
    model.blocks[1].register_forward_hook(lambda _m, _i, o: captured.append(o.clone()))
    for record in store.records():
        feats = np.load(out / f"{record.video_id}.npy")
        mine = [r for r in rows if r["video_id"] == record.video_id]
        assert feats.shape == (len(mine), 4)
        frames = store.read_frames(record.video_id)
        n = len(frames)
        expected_windows = max(1, (n - 8) // 4 + 1)
        assert len(mine) == expected_windows
        for row, feat in zip(mine, feats, strict=True):
            start, end = int(row["start_frame"]), int(row["end_frame"])
            assert float(row["start_s"]) == pytest.approx(start / 10) and float(row["end_s"]) == pytest.approx(
                (end + 1) / 10)
            idx = np.minimum(np.arange(start, start + 8), n - 1)  # the 6-frame video is padded
            clip = torch.from_numpy(frames[idx].copy()).permute(3, 0, 1, 2).float()[None] / 255
            captured.clear()
            with torch.no_grad():
                model(clip)
            np.testing.assert_allclose(feat, captured[0].mean(dim=(2, 3, 4))[0].numpy(), rtol=1e-5, atol=1e-6)
    assert {r["padded"] for r in rows if "a_short" in r["video_id"]} == {"1"}


def test_pool_none_keeps_the_map_and_max_pools(run_dir, real_dataset, tmp_path):
    extract_features(run_dir, [real_dataset], tmp_path / "none", "blocks.1", pool="none")
    extract_features(run_dir, [real_dataset], tmp_path / "max", "blocks.1", pool="max")
    vid = DatasetStore(real_dataset).records()[0].video_id
    full, peak = np.load(tmp_path / "none" / f"{vid}.npy"), np.load(tmp_path / "max" / f"{vid}.npy")
    assert full.shape[1:] == (4, 2, 8, 8)  # [windows, C, T, H, W] after two 2x poolings of 8x32x32
    np.testing.assert_allclose(peak, full.reshape(len(full), 4, -1).max(-1), rtol=1e-6)


def test_extract_stacks_a_recurrent_layer_called_once_per_frame():
    class Stepper(torch.nn.Module):
        streams = ("rgb",)

        def __init__(self):
            super().__init__()
            self.cell = torch.nn.Conv2d(1, 2, 1)

        def forward(self, x):  # [B, 1, T, H, W]: the cell runs once per frame
            return torch.stack([self.cell(x[:, :, t]) for t in range(x.shape[2])], 2).mean((2, 3, 4))

    model, x = Stepper(), torch.rand(3, 1, 5, 4, 4)
    maps = extract(model, x, "cell", pool="none")
    assert maps.shape == (3, 2, 5, 4, 4)
    np.testing.assert_allclose(extract(model, x, "cell"), maps.mean((2, 3, 4)), rtol=1e-5, atol=1e-7)


def test_unknown_layer_lists_the_valid_ones(run_dir, real_dataset, tmp_path):
    with pytest.raises(KeyError, match=r"no layer 'nope'.*blocks\.0\.0"):
        extract_features(run_dir, [real_dataset], tmp_path / "x", "nope")
    assert "classifier" in layer_names(create_model("cnn3d", 2, 3, **OPTIONS))


def test_a_killed_run_resumes_without_redoing_finished_videos(run_dir, real_dataset, tmp_path, monkeypatch):
    import kinetoscope.features.run as feature_run

    reference = tmp_path / "ref"
    extract_features(run_dir, [real_dataset], reference, stride=2, batch_size=2)
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real_extract = feature_run.extract

    def dying_extract(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # the process is stopped mid-run
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(feature_run, "extract", dying_extract)
    with pytest.raises(KeyboardInterrupt):
        extract_features(run_dir, [real_dataset], out, stride=2, batch_size=2)
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    assert 0 < len(done) < 4 and not list(out.rglob("*.tmp"))
    monkeypatch.setattr(feature_run, "extract", real_extract)
    result = extract_features(run_dir, [real_dataset], out, stride=2, batch_size=2)
    assert result["skipped_done"] == len(done) and result["written"] == 4 - len(done)
    assert {p: (out / p).stat().st_mtime_ns for p in done} == done
    for path in reference.glob("*.npy"):
        np.testing.assert_array_equal(np.load(path), np.load(out / path.name))
    assert (out / "windows.csv").read_text() == (reference / "windows.csv").read_text()


def test_other_settings_into_the_same_directory_are_refused(run_dir, real_dataset, tmp_path):
    extract_features(run_dir, [real_dataset], tmp_path / "f", stride=4)
    with pytest.raises(ValueError, match="stride: 4 -> 8"):
        extract_features(run_dir, [real_dataset], tmp_path / "f", stride=8)


def test_shards_split_the_videos_and_together_cover_them(run_dir, real_dataset, tmp_path):
    out = tmp_path / "sharded"
    first = extract_features(run_dir, [real_dataset], out, shard="0/2")
    second = extract_features(run_dir, [real_dataset], out, shard="1/2")
    assert first["written"] + second["written"] == 4 and first["written"] == 2
    ids = {r["video_id"] for r in read_windows(out / "windows-0-of-2.csv")}
    assert ids.isdisjoint({r["video_id"] for r in read_windows(out / "windows-1-of-2.csv")})
    merged = extract_features(run_dir, [real_dataset], out)  # everything done: only windows.csv is built
    assert merged["written"] == 0 and len({r["video_id"] for r in read_windows(out / "windows.csv")}) == 4


def test_video_files_decode_directly_and_bad_ones_go_to_problems(run_dir, tmp_path):
    src = tmp_path / "new"
    moving_square(src / "ok.mp4", 24)
    moving_square(src / "tiny.mp4", 5)
    (src / "broken.mp4").write_bytes(b"not a video" * 50)
    out = tmp_path / "out"
    result = extract_features(run_dir, [src], out, short="skip")
    assert result["written"] == 1 and np.load(out / "ok.npy").shape == (3, 4)
    problems = (out / "problems.csv").read_text()
    assert "broken.mp4" in problems and "tiny.mp4" in problems and "shorter than the 8-frame window" in problems


def test_cli_features_and_models_info_layers(run_dir, real_dataset, tmp_path):
    from typer.testing import CliRunner

    from kinetoscope.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "info", "cnn3d", "--layers", "--input", "3x8x32x32"])
    assert result.exit_code == 0 and "blocks.2.0 (default)" in result.output and "1x16x1x4x4" in result.output
    result = runner.invoke(app, ["features", str(run_dir), str(real_dataset), "--out", str(tmp_path / "c"),
                                 "--layer", "blocks.0"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "c").glob("*.npy"))) == 4
    result = runner.invoke(app, ["features", str(run_dir), str(real_dataset), "--out", str(tmp_path / "d"),
                                 "--layer", "bogus"])
    assert result.exit_code == 2 and "valid layers" in result.output


def test_features_of_a_run_see_its_evaluation_transform(run_dir, real_dataset, tmp_path):
    import shutil

    run = tmp_path / "normalised"
    shutil.copytree(run_dir, run)
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"data": {"root": str(real_dataset), "frames": 8, "normalize": "imagenet"}}))
    extract_features(run, [real_dataset], tmp_path / "f", "blocks.1", batch_size=4)
    vid = DatasetStore(real_dataset).records()[1].video_id
    frames = DatasetStore(real_dataset).read_frames(vid)
    clip = torch.from_numpy(frames[:8].copy()).permute(3, 0, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1, 1)
    model, _ = load_run_model(run)
    expected = extract(model, ((clip - mean) / std)[None], "blocks.1")[0].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "f" / f"{vid}.npy")[0], expected, rtol=1e-5, atol=1e-6)
