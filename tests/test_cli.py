"""The command line: fast help, one-line errors that name the culprit, the stable command names."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from kinetoscope.cli import app

runner = CliRunner()


def test_help_imports_neither_torch_nor_lightning():
    code = (
        "import sys\nfrom kinetoscope.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning', 'cv2', 'av'))\n"
        "assert not heavy, heavy[:5]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout and "train" in proc.stdout


def _write(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_unknown_model_lists_the_valid_ones(tmp_path, motion_dataset):
    cfg = _write(tmp_path, f"out_dir: {tmp_path}\ndata: {{root: {motion_dataset}}}\nmodel: {{name: cnn3e}}\n")
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "unknown model 'cnn3e'" in result.output and "convlstm" in result.output


def test_config_typo_names_the_key(tmp_path, motion_dataset):
    cfg = _write(tmp_path, f"data: {{root: {motion_dataset}}}\ntrain: {{max_epoch: 3}}\n")
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 2
    assert "train.max_epoch: unknown key" in result.output
    result = runner.invoke(app, ["train", "--config", str(cfg), "--set", "model.hiden=3"])
    assert result.exit_code == 2


def test_unknown_domain_is_refused_with_the_valid_ones(tmp_path):
    result = runner.invoke(app, ["synth", "temporal-shapes", str(tmp_path / "x"), "--domain", "3dot", "--num", "5"])
    assert result.exit_code == 2
    assert "3dot" in result.output and "mnist-bg" in result.output


def test_every_command_of_design_md_exists():
    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    groups = {g.name for g in app.registered_groups}
    assert {"demo", "train", "evaluate", "predict", "cv", "explain", "report"} <= commands
    assert {"synth", "data", "models", "suite"} <= groups
    sub = {g.name: {c.name for c in g.typer_instance.registered_commands} for g in app.registered_groups}
    assert {"temporal-shapes", "appearance-free"} <= sub["synth"] and {"prepare", "inspect"} <= sub["data"]
    assert {"list", "info", "import"} <= sub["models"]
    assert {"temporal-shapes", "reversal", "appearance-free"} <= sub["suite"]


def test_train_then_evaluate_on_reversed_clips(tmp_path, motion_dataset):
    cfg = _write(
        tmp_path,
        f"name: r\nout_dir: {tmp_path}\ndata: {{root: {motion_dataset}, batch_size: 8}}\n"
        "model: {name: cnn3d, hidden: 4, blocks: 2}\noptim: {name: adam, lr: 0.01}\n"
        "train: {max_epochs: 1, progress: false}\n",
    )
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "predictions.csv").is_file()
    result = runner.invoke(app, ["train", "--config", str(cfg)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "r"), "--reverse"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and (tmp_path / "r" / "evaluations" / "val-reversed.json").is_file()
    result = runner.invoke(app, ["explain", str(tmp_path / "r"), "--method", "gradcam", "--clips", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "explanations" / "index.csv").is_file()
    result = runner.invoke(app, ["report", str(tmp_path / "r")])
    assert result.exit_code == 0 and (tmp_path / "r" / "report.html").is_file()
    assert "data:image/gif;base64" in (tmp_path / "r" / "report.html").read_text()


def test_options_a_command_would_ignore_are_refused(tmp_path):
    cfg = _write(tmp_path, "data: {root: /x}\n")
    result = runner.invoke(app, ["cv", "--config", str(cfg), "--target", str(tmp_path), "--epochs", "3"])
    assert result.exit_code == 2 and "--target, --epochs has no effect with --protocol loso" in result.output
    result = runner.invoke(app, ["cv", "--config", str(cfg), "--protocol", "transfer", "--no-resume"])
    assert result.exit_code == 2 and "--no-resume" in result.output
    result = runner.invoke(app, ["cv", "--config", str(cfg), "--protocol", "kfold"])
    assert result.exit_code == 2 and "'kfold'" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path), "v.mp4", "--frame-aggregation", "median"])
    assert result.exit_code == 2 and "'median'" in result.output
    result = runner.invoke(app, ["synth", "domains", str(tmp_path), str(tmp_path / "o"), "--fill", "1,2,x"])
    assert result.exit_code == 2 and "--fill '1,2,x'" in result.output
