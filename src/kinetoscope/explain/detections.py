"""Drawing Detect & Track tubes on frames (Feichtenhofer 2017 §8.4, Fig. 8.4-style illustrations).

``kinetoscope explain`` on a D&T run reads the detections and tubes that ``kinetoscope evaluate``
wrote (``evaluations/<name>/detections.csv``, ``tubes.csv``) and draws, for each chosen video, its
best tubes (highest tube score first), one colour per tube, each box labelled with the class and
its score after linking; ground-truth boxes are drawn thin and white. Output under
``explanations/tubes/``: ``<video>.gif`` (all frames), ``<video>.png`` (a strip of up to 8 frames)
and ``index.csv``.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]


def draw_tubes(
    frames: np.ndarray,
    boxes: dict[int, list[tuple[int, str, float, tuple[float, float, float, float]]]],
    ground_truth: dict[int, list[tuple[float, float, float, float]]] | None = None,
    scale: int = 2,
) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` frames -> ``[T, scale*H, scale*W, 3]`` with tube boxes drawn.

    ``boxes[t]`` lists ``(tube, class, score, (x1, y1, x2, y2))`` of frame t; ``ground_truth[t]`` boxes.
    """
    import cv2

    frames = np.asarray(frames)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, axis=-1)
    out = np.ascontiguousarray(frames.repeat(scale, axis=1).repeat(scale, axis=2))
    for t in range(len(out)):
        for x1, y1, x2, y2 in (ground_truth or {}).get(t, []):
            cv2.rectangle(out[t], (int(x1 * scale), int(y1 * scale)), (int(x2 * scale) - 1, int(y2 * scale) - 1),
                          (255, 255, 255), 1)
        for tube, label, score, (x1, y1, x2, y2) in boxes.get(t, []):
            colour = PALETTE[tube % len(PALETTE)]
            top_left = (int(x1 * scale), int(y1 * scale))
            cv2.rectangle(out[t], top_left, (int(x2 * scale) - 1, int(y2 * scale) - 1), colour, 2)
            cv2.putText(out[t], f"{label} {score:.2f}", (top_left[0] + 2, max(top_left[1] - 3, 9)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.35, colour, 1, cv2.LINE_AA)
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `kinetoscope evaluate` on the run first")
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def explain_detect_track(
    run_dir: str | Path,
    videos: int | list[str] = 4,
    name: str = "val",
    out: str | Path | None = None,
    *,
    tubes_per_video: int = 5,
) -> Path:
    """Draw the best ``tubes_per_video`` tubes of ``videos`` (a count, or video ids) of evaluation
    ``name``; returns the output directory."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.objects import load_detection_dataset
    from kinetoscope.models.checkpoint import read_run_yaml
    from kinetoscope.synth.preview import write_gif
    from kinetoscope.utils import atomic_path, atomic_write_text, csv_text

    run_dir = Path(run_dir)
    evaluation = run_dir / "evaluations" / name
    detections, tubes = _read_csv(evaluation / "detections.csv"), _read_csv(evaluation / "tubes.csv")
    config = read_run_yaml(run_dir)
    root = Path(config["data"]["root"])
    store = DatasetStore(root)
    _, objects = load_detection_dataset(root, None)
    evaluated = list(dict.fromkeys(row["video_id"] for row in tubes))
    chosen = evaluated[:videos] if isinstance(videos, int) else list(videos)
    unknown = [v for v in chosen if v not in objects]
    if unknown:
        raise ValueError(f"video(s) {unknown} are not in {root}")
    best: dict[str, set[int]] = defaultdict(set)
    for vid in chosen:
        ranked = sorted((r for r in tubes if r["video_id"] == vid), key=lambda r: -float(r["tube_score"]))
        best[vid] = {int(r["tube"]) for r in ranked[:tubes_per_video]}
    out_dir = Path(out) if out is not None else run_dir / "explanations" / "tubes"
    index = []
    for vid in chosen:
        boxes: dict[int, list] = defaultdict(list)
        for r in detections:
            if r["video_id"] == vid and int(r["tube"]) in best[vid]:
                boxes[int(r["frame"])].append((int(r["tube"]), r["label"], float(r["linked_score"]),
                                               tuple(float(r[k]) for k in ("x1", "y1", "x2", "y2"))))
        truth = {t: [o.box for o in frame] for t, frame in enumerate(objects[vid].frames)}
        drawn = draw_tubes(store.read_frames(vid), boxes, truth)
        write_gif(out_dir / f"{vid}.gif", drawn, fps=5)
        strip = np.concatenate(list(drawn[:: max(1, len(drawn) // 8)][:8]), axis=1)
        with atomic_path(out_dir / f"{vid}.png") as tmp:
            Image.fromarray(strip).save(tmp, format="PNG")
        index.append([vid, len(best[vid]), f"{vid}.gif", f"{vid}.png"])
    atomic_write_text(out_dir / "index.csv", csv_text(["video_id", "tubes", "gif", "png"], index))
    return out_dir
