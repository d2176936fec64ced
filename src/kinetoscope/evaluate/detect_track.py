"""``kinetoscope evaluate`` on a Detect & Track run: frame mAP before and after tube linking.

Following Feichtenhofer 2017 §8.5 (Table 8.1): the same trained D&T network is scored on every
annotated frame of the evaluation videos

* ``map_detection`` — per-frame detections alone (the "D (& T loss)" row: the detector trained
  jointly with tracking, used frame by frame);
* ``map_linked`` — after linking the detections into tubes with the tracklets and rescoring (§8.4;
  the "D&T" row);
* ``map_linked_without_tracks`` — linking with the pairwise term psi = 0 (tubes from class scores
  alone), which isolates what the tracklets contribute.

Writes under the run directory: ``evaluations/<name>/detections.csv`` (one row per detection:
video, frame, class, score, linked score, tube, box), ``evaluations/<name>/tubes.csv``,
``evaluations/<name>.json`` and the ``evaluations`` entry of ``summary.json``. Frames without an
annotation file are linked but not scored; a video without objects simply has no ground truth (its
detections count as false positives).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from kinetoscope.evaluate.detection import frame_map
from kinetoscope.utils import atomic_write_json, atomic_write_text, csv_text, progress

DETECTION_COLUMNS = ["video_id", "frame", "label", "score", "linked_score", "tube", "x1", "y1", "x2", "y2"]


def evaluate_detect_track(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str | None = None,
    name: str | None = None,
    *,
    max_videos: int | None = None,
) -> dict[str, Any]:
    """Evaluate a D&T run on ``data`` (default: its own dataset's validation split); returns the
    metrics also written to ``evaluations/<name>.json``."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.objects import load_detection_dataset
    from kinetoscope.models.checkpoint import load_run_model, read_run_yaml
    from kinetoscope.models.tube_linking import Tracklets, link_tubes
    from kinetoscope.train.detect_track import normalise_frames

    run_dir = Path(run_dir)
    config = read_run_yaml(run_dir)
    model, spec = load_run_model(run_dir)
    own = data is None
    root = Path(config["data"]["root"]) if own else Path(data)
    split = config["data"]["val_split"] if own and split is None else split
    name = name or ("val" if own else DatasetStore(root).meta().get("name", root.name))
    classes, objects = load_detection_dataset(root, split)
    if classes != spec["classes"]:
        raise ValueError(f"{root} has classes {classes}; the run was trained on {spec['classes']}")
    store = DatasetStore(root)
    ground_truth: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    before, after, untracked = {}, {}, {}
    rows, tube_rows = [], []
    seconds, frame_count = 0.0, 0
    videos = sorted(objects)[:max_videos]
    for vid in progress(videos, total=len(videos), description=f"D&T evaluate {name}"):
        frames = normalise_frames(store.read_frames(vid))
        started = time.perf_counter()
        detections, tracklets = model.detect_video(frames)
        tubes, rescored = link_tubes(detections, tracklets, len(classes))
        seconds += time.perf_counter() - started
        frame_count += len(detections)
        _, rescored_untracked = link_tubes(detections, [Tracklets.empty() for _ in tracklets], len(classes))
        tube_of = {}
        for number, tube in enumerate(tubes):
            tube_rows.append([vid, number, classes[tube.label], tube.frames[0], tube.frames[-1], len(tube.frames),
                              round(tube.score, 6)])
            tube_of.update({(t, i): number for t, i in zip(tube.frames, tube.indices, strict=True)})
        video = objects[vid]
        for t, det in enumerate(detections):
            for i in range(len(det)):
                rows.append([vid, t, classes[int(det.labels[i])], round(float(det.scores[i]), 6),
                             round(float(rescored[t][i]), 6), tube_of.get((t, i), -1),
                             *(round(v, 2) for v in det.boxes[i].tolist())])
            if not video.annotated[t]:
                continue
            target = video.targets(t, classes)
            ground_truth[(vid, t)] = (target["boxes"], target["labels"] - 1)
            before[(vid, t)] = (det.boxes, det.labels, det.scores)
            after[(vid, t)] = (det.boxes, det.labels, rescored[t])
            untracked[(vid, t)] = (det.boxes, det.labels, rescored_untracked[t])
    scored = {key: frame_map(dets, ground_truth, len(classes)) for key, dets in
              (("detection", before), ("linked", after), ("linked_without_tracks", untracked))}
    metrics: dict[str, Any] = {
        "name": name, "task": "detect_track", "dataset": str(root), "split": split or "", "videos": len(videos),
        "frames_scored": len(ground_truth),
        "map_detection": scored["detection"]["map"],
        "map_linked": scored["linked"]["map"],
        "map_linked_without_tracks": scored["linked_without_tracks"]["map"],
        "ap_detection": dict(zip(classes, scored["detection"]["ap"], strict=True)),
        "ap_linked": dict(zip(classes, scored["linked"]["ap"], strict=True)),
        "num_ground_truth": dict(zip(classes, scored["detection"]["num_ground_truth"], strict=True)),
        "tubes": len(tube_rows),
        "frames_per_second": round(frame_count / seconds, 2) if seconds else None,
    }
    target_dir = run_dir / "evaluations" / name
    atomic_write_text(target_dir / "detections.csv", csv_text(DETECTION_COLUMNS, rows))
    atomic_write_text(target_dir / "tubes.csv", csv_text(
        ["video_id", "tube", "label", "first_frame", "last_frame", "frames", "tube_score"], tube_rows))
    atomic_write_json(run_dir / "evaluations" / f"{name}.json", metrics)
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary.setdefault("evaluations", {})[name] = {
        k: metrics[k] for k in ("map_detection", "map_linked", "map_linked_without_tracks", "frames_scored")
    }
    atomic_write_json(summary_path, summary)
    return metrics
