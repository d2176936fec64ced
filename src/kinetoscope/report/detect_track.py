"""The report section of a Detect & Track run: losses, mAP before/after linking, tubes drawn on frames."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

from kinetoscope.report.html import html_img, html_table


def detect_track_section(run_dir: Path) -> str:
    """HTML for a D&T run (Feichtenhofer 2017 Ch. 8): training summary, one row per evaluation with
    frame mAP of detection alone, after linking, and after linking without tracklets, per-class AP,
    and the tube strips of ``explanations/tubes``."""
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    label = summary.get("name", run_dir.name)
    parts = [f"<h2>{html.escape(label)}</h2>",
             f"<p class='muted'>Detect &amp; Track, model <b>{html.escape(str(summary.get('model', '?')))}</b>, "
             f"{summary.get('params', 0):,} parameters; {summary.get('steps', '?')} steps on "
             f"{summary.get('train_pairs', '?')} frame pairs in {summary.get('train_seconds', 0):.0f} s; "
             f"final losses {html.escape(json.dumps(summary.get('final_losses', {})))}.</p>"]
    rows, ap_rows = [], []
    for name in summary.get("evaluations", {}):
        path = run_dir / "evaluations" / f"{name}.json"
        metrics = json.loads(path.read_text()) if path.is_file() else {}
        rows.append([name, metrics.get("frames_scored"), metrics.get("map_detection"), metrics.get("map_linked"),
                     metrics.get("map_linked_without_tracks"), metrics.get("frames_per_second")])
        for cls, ap in metrics.get("ap_detection", {}).items():
            ap_rows.append([name, cls, metrics.get("num_ground_truth", {}).get(cls), ap,
                            metrics.get("ap_linked", {}).get(cls)])
    if rows:
        parts.append("<p>Frame mAP@0.5 (VID protocol): detections alone vs D&amp;T with tube linking and "
                     "rescoring (§8.4), and linking without the tracklet term.</p>")
        parts.append(html_table(["evaluation", "frames", "mAP detection", "mAP D&T linked",
                                 "mAP linked w/o tracks", "frames/s"], rows))
        parts.append(html_table(["evaluation", "class", "objects", "AP detection", "AP linked"], ap_rows))
    tubes = run_dir / "explanations" / "tubes"
    if (tubes / "index.csv").is_file():
        parts.append("<h3>Tubes</h3><p class='muted'>Best tubes per video, one colour per tube, scores after "
                     "linking; ground truth in white.</p>")
        with open(tubes / "index.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                parts.append(f"<figure>{html_img(tubes / row['png'], row['video_id'])}"
                             f"<figcaption>{html.escape(row['video_id'])}</figcaption></figure>")
    return "\n".join(parts)
