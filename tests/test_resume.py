"""`train --resume` after `kill -9` continues bit for bit: order, augmentation draws, dropout."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from conftest import write_motion_dataset


def _train(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "KINETOSCOPE_PLAIN": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "kinetoscope.cli", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_resume_after_kill_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    data = write_motion_dataset(tmp_path / "motion", per_class=90, frames=8, size=16)
    config = {
        "out_dir": str(tmp_path / "runs"),
        "data": {"root": str(data), "frames": 6, "batch_size": 8, "size": 12, "augment": True, "jitter": True},
        "model": {"name": "convlstm1", "hidden": 4, "blocks": 2, "kernel_size": 3, "dropout": 0.3},
        "optim": {"name": "adam", "lr": 3e-3, "schedule": "cosine"},
        "train": {"max_epochs": 4, "patience": 10, "seed": 3, "threads": 1},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    whole = _train(["--config", str(path), "--set", "name=whole"])
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    broken = _train(["--config", str(path), "--set", "name=broken"])
    run = tmp_path / "runs" / "broken"
    deadline = time.monotonic() + 600
    while not (run / "checkpoints" / "last.ckpt").is_file():  # kill as soon as one epoch is saved
        assert broken.poll() is None and time.monotonic() < deadline, broken.stderr.read()
        time.sleep(0.005)
    time.sleep(0.05)  # let the rename land; a kill during the write is the atomic-checkpoint case
    broken.send_signal(signal.SIGKILL)
    broken.wait(timeout=60)
    assert len(_rows(run)) < 4, "the run finished before it could be killed"

    resumed = _train(["--resume", str(run)])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()

    assert _rows(run) == _rows(tmp_path / "runs" / "whole") and len(_rows(run)) == 4
    a, b = load_file(str(run / "model.safetensors")), load_file(str(tmp_path / "runs" / "whole" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
