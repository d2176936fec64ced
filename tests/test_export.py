"""``kinetoscope export``: each format reloads from disk and reproduces the eager model on a real clip."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.index import VideoRecord
from kinetoscope.models import create_model
from kinetoscope.models.checkpoint import save_run_model
from kinetoscope.models.export import ExportError, export_and_check, export_run, load_exported

SMALL = {"cnn3d": {"hidden": 4, "blocks": 2, "input_size": 32, "frames": 8},
         "convlstm": {"hidden": 4, "blocks": 2, "input_size": 32}}


@pytest.fixture(scope="module")
def rgb_dataset(tmp_path_factory) -> Path:
    """Two RGB videos of 8 frames at 64x64 (a moving bar), the run's real clips."""
    root = tmp_path_factory.mktemp("export") / "data"
    store = DatasetStore(root)
    records = []
    for k, label in enumerate(("a", "b")):
        frames = np.zeros((8, 64, 64, 3), np.uint8)
        for t in range(8):
            frames[t, 20:30, 4 * t + 10 * k : 4 * t + 10 * k + 10] = (200, 90, 30)
        store.write_frames(f"v{k}", frames)
        records.append(VideoRecord(video_id=f"v{k}", label=label, split="val", fps=8.0, num_frames=8, duration=1.0))
    store.write_records(records)
    store.write_meta({"name": "bars", "classes": ["a", "b"], "fps": 8, "size": [64, 64], "channels": 3})
    return root


def make_run(tmp_path: Path, name: str, data: Path, size: int = 64) -> Path:
    run = tmp_path / name
    options = dict(SMALL.get(name, {}))
    if "input_size" in options:
        options["input_size"] = size
    torch.manual_seed(0)
    spec = {"name": name, "num_classes": 2, "in_channels": 3, "options": options, "classes": ["a", "b"]}
    save_run_model(create_model(name, 2, 3, **options), run, spec)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"root": str(data), "val_split": "val", "frames": 8}}))
    return run


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program", "onnx"])
@pytest.mark.parametrize("name", ["cnn3d", "convlstm"])
def test_small_models_round_trip_every_format(name, fmt, rgb_dataset, tmp_path):
    run = make_run(tmp_path, name, rgb_dataset)
    result = export_run(run, fmt)
    assert Path(result["path"]).is_file() and result["input_shapes"] == [[1, 3, 8, 64, 64]]
    assert result["max_abs_diff"] <= 1e-4
    # the file stands alone: reloaded and run on the other video it still matches the eager model
    other = torch.from_numpy(DatasetStore(rgb_dataset).read_frames("v1")[None].copy()).permute(0, 4, 1, 2, 3) / 255
    from kinetoscope.models.checkpoint import load_run_model

    model, _ = load_run_model(run)
    with torch.no_grad():
        expected = model(other.float())
    got = load_exported(result["path"], fmt)(other.float())
    assert torch.allclose(got.float(), expected, atol=1e-4) and not torch.equal(expected[0], expected[0] * 0)


@pytest.mark.parametrize("name", ["r2plus1d_18", "x3d_s", "i3d"])
def test_backbones_round_trip_torchscript(name, rgb_dataset, tmp_path):
    assert export_run(make_run(tmp_path, name, rgb_dataset), "torchscript")["max_abs_diff"] <= 1e-4


@pytest.mark.slow  # 10-20 s each on one core; `make test-all` runs them, benchmarks/export.py measures all
@pytest.mark.parametrize("fmt", ["exported-program", "onnx"])
@pytest.mark.parametrize("name", ["r2plus1d_18", "x3d_s", "i3d"])
def test_backbones_round_trip_exported_program_and_onnx(name, fmt, rgb_dataset, tmp_path):
    assert export_run(make_run(tmp_path, name, rgb_dataset), fmt)["max_abs_diff"] <= 1e-4


def test_the_convlstm_exports_its_stepwise_form_which_equals_the_fused_layer():
    from kinetoscope.layers import ConvLSTM

    for stride in (1, 2):
        layer = ConvLSTM(3, 5, 3, stride=stride).eval()
        x = torch.rand(2, 3, 6, 12, 12)
        with torch.no_grad():
            torch.testing.assert_close(layer.forward_stepwise(x), layer(x), atol=1e-5, rtol=1e-5)


def test_a_model_the_format_cannot_hold_is_refused_with_the_reason(tmp_path):
    class DataDependent(torch.nn.Module):
        streams = ("rgb",)

        def forward(self, x):
            return x.mean((2, 3, 4)) if float(x.sum()) > 0 else -x.mean((2, 3, 4))

    with pytest.raises(ExportError, match="DataDependent cannot be exported as exported-program"):
        export_and_check(DataDependent(), [torch.rand(1, 3, 2, 4, 4)], tmp_path / "m.pt2", "exported-program")
    assert not (tmp_path / "m.pt2").exists()


def test_an_export_that_does_not_reproduce_the_model_is_removed(tmp_path):
    class Noisy(torch.nn.Module):  # traced once, then differs: the check must catch it
        streams = ("rgb",)

        def forward(self, x):
            return x.mean((2, 3, 4)) + torch.rand(1)

    with pytest.raises(ExportError, match=r"max \|diff\|"):
        export_and_check(Noisy(), [torch.rand(1, 3, 2, 4, 4)], tmp_path / "m.ts", "torchscript")
    assert not (tmp_path / "m.ts").exists()


def test_onnx_without_its_packages_says_how_to_install_them(rgb_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if it were not installed
    with pytest.raises(ExportError, match=r"onnxruntime.*kinetoscope\[onnx\]"):
        export_run(make_run(tmp_path, "cnn3d", rgb_dataset), "onnx")


def test_cli_export_prints_the_difference(rgb_dataset, tmp_path):
    from typer.testing import CliRunner

    from kinetoscope.cli import app

    run = make_run(tmp_path, "cnn3d", rgb_dataset)
    result = CliRunner().invoke(app, ["export", str(run), "--format", "torchscript"])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output and (run / "export" / "model.ts").is_file()
    result = CliRunner().invoke(app, ["export", str(run), "--format", "tflite"])
    assert result.exit_code == 2 and "torchscript, onnx, exported-program" in result.output


def test_softpool_exports_its_unfold_form_which_equals_the_tiled_function(tmp_path):
    from kinetoscope.layers import SoftPool3d

    class Pool(torch.nn.Module):
        streams = ("rgb",)

        def __init__(self):
            super().__init__()
            self.pool = SoftPool3d(2)

        def forward(self, x):
            return self.pool(x).flatten(1)

    x = torch.randn(1, 2, 4, 6, 6)
    for fmt in ("torchscript", "exported-program"):
        assert export_and_check(Pool(), [x], tmp_path / f"p.{fmt}", fmt)["max_abs_diff"] <= 1e-6
