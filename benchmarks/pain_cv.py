"""Two-stream ConvLSTM-2 vs RGB-only ConvLSTM-1 under leave-one-subject-out (Broomé 2022 §3.2).

The issue-6 "must show" at benchmark size: mp4 videos of synthetic subjects whose class (pan
direction) is visible only in motion (``tests/test_cv.py::write_subject_videos``), prepared with
Farnebäck flow, cross-validated by ``kinetoscope.suites.cv.run_cv``. Prints clip and video macro-F1
(mean ± std over folds) and wall time per model, and the ratios two-stream / RGB-only.

    .venv/bin/python benchmarks/pain_cv.py [--subjects 6] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    from kinetoscope.suites.cv import run_cv
    from test_cv import cv_config, prepared_subjects

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = prepared_subjects(tmp_path, subjects=args.subjects, per_class=args.per_class)
        for model in ("convlstm2", "convlstm1"):
            started = time.perf_counter()
            out = run_cv(
                cv_config(root, tmp_path / "runs", model),
                repeats=args.repeats,
                threads=args.threads,
                workers=args.workers,
                out_dir=tmp_path / f"cv-{model}",
            )
            summary = json.loads((out / "summary.json").read_text())
            rows[model] = (summary, time.perf_counter() - started)

    def cell(summary: dict, level: str) -> str:
        f1 = summary[level]["macro_f1"]
        return f"{f1['mean']:.3f} ± {f1['std']:.3f}"

    print(f"\nLOSO, {args.subjects} subjects x {args.repeats} repeats; class only in motion (chance 0.5)")
    print(f"{'model':<26}{'clip macro-F1':>18}{'video macro-F1 (vote)':>24}{'seconds':>10}")
    labels = {"convlstm2": "ConvLSTM-2 (RGB + flow)", "convlstm1": "ConvLSTM-1 (RGB)"}
    for model, (summary, seconds) in rows.items():
        print(
            f"{labels[model]:<26}{cell(summary, 'clip'):>18}{cell(summary, 'video_vote'):>24}{seconds:>10.1f}"
        )
    (two, t2), (one, t1) = rows["convlstm2"], rows["convlstm1"]
    ratio = two["clip"]["macro_f1"]["mean"] / max(one["clip"]["macro_f1"]["mean"], 1e-9)
    print(f"{'ratio two-stream / RGB':<26}{ratio:>18.2f}{'':>24}{t2 / t1:>10.2f}")


if __name__ == "__main__":
    main()
