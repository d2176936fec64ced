"""`kinetoscope demo --quick`: the whole pipeline end to end, and resuming a finished demo."""

from __future__ import annotations

import json

from kinetoscope.suites.demo import DOMAINS, run_demo


def test_quick_demo_writes_every_part_of_the_report_and_resumes(tmp_path):
    out = tmp_path / "demo"
    report = run_demo(out, quick=True)
    html = report.read_text()
    for text in ("Results", "2Dot reversed", "MNIST-bg", "Training curves", "Sample clips", "Explanations",
                 "data:image/gif;base64", "data:image/png;base64"):
        assert text in html, text
    # the two families' temporal masks compared under the paper protocol (fixed iterations, no early stop)
    assert "<h2>Temporal masks</h2>" in html and "paper protocol: 30 fixed Adam iterations per clip" in html
    assert "not comparable" not in html and "Digits used" in html
    for family in ("cnn3d", "convlstm"):
        summary = json.loads((out / family / "summary.json").read_text())
        assert set(summary["evaluations"]) == {"val", "val-reversed", *DOMAINS[1:]}
        assert (out / family / "explanations" / "index.csv").is_file()
    assert all((out / "data" / d / "dataset.json").is_file() for d in DOMAINS)

    before = (out / "cnn3d" / "model.safetensors").stat().st_mtime_ns
    run_demo(out, quick=True)  # everything is done: nothing is retrained
    assert (out / "cnn3d" / "model.safetensors").stat().st_mtime_ns == before
