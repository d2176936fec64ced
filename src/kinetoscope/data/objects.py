"""Object boxes with identities per frame, for video object detection (Feichtenhofer 2017 §8.5.1).

A detection dataset is an ordinary kinetoscope dataset (``frames/<id>.npy`` uint8 ``[T, H, W, C]``,
``annotations.csv``, ``dataset.json`` with ``"task": "detection"`` and the object ``classes``) plus:

``objects.csv``
    one row per object and frame: ``video_id, frame, track_id, label, x1, y1, x2, y2, occluded``;
    boxes in pixels of the cached frames, ``x2``/``y2`` exclusive; ``track_id`` is the object's
    identity within its video (ImageNet VID's ``trackid``).
``unannotated.csv``
    ``video_id, frame`` of frames that have pixels but no annotation file; they are not trained on
    and not scored, but tube linking runs through them.

:func:`read_objects` clips boxes that leave the frame, drops degenerate ones and reports both
(problems go to ``problems.csv`` with the file and line). :func:`import_imagenet_vid` converts the
ImageNet VID layout — ``Data/VID/<split>/<snippet>/<frame:06d>.JPEG`` with one
``Annotations/VID/<split>/<snippet>/<frame:06d>.xml`` per frame — into this form.
"""

from __future__ import annotations

import csv
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kinetoscope.utils import atomic_write_text, csv_text

OBJECT_COLUMNS = ["video_id", "frame", "track_id", "label", "x1", "y1", "x2", "y2", "occluded"]

# The 30 ImageNet VID classes (WordNet ids as they appear in the XML files -> names).
VID_CLASSES = {
    "n02691156": "airplane", "n02419796": "antelope", "n02131653": "bear", "n02834778": "bicycle",
    "n01503061": "bird", "n02924116": "bus", "n02958343": "car", "n02402425": "cattle", "n02084071": "dog",
    "n02121808": "domestic_cat", "n02503517": "elephant", "n02118333": "fox", "n02510455": "giant_panda",
    "n02342885": "hamster", "n02374451": "horse", "n02129165": "lion", "n01674464": "lizard",
    "n02484322": "monkey", "n03790512": "motorcycle", "n02324045": "rabbit", "n02509815": "red_panda",
    "n02411705": "sheep", "n01726692": "snake", "n02355227": "squirrel", "n02129604": "tiger",
    "n04468005": "train", "n01662784": "turtle", "n04530566": "watercraft", "n02062744": "whale",
    "n02391049": "zebra",
}


@dataclass
class ObjectBox:
    """One object in one frame."""

    video_id: str
    frame: int
    track_id: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    occluded: float = 0.0

    def row(self) -> list[Any]:
        return [self.video_id, self.frame, self.track_id, self.label, *(round(v, 2) for v in self.box), self.occluded]

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)


def clip_box(
    box: tuple[float, float, float, float], height: int, width: int, min_size: float = 1.0
) -> tuple[tuple[float, float, float, float] | None, str]:
    """Clip ``(x1, y1, x2, y2)`` into a ``height x width`` frame: ``(clipped box or None, reason)``.

    None (with the reason) for a box that is not finite or has a side below ``min_size`` px after
    clipping; the reason is "" for a box that was inside the frame already.
    """
    text = ", ".join(f"{v:g}" for v in box)
    if not all(math.isfinite(v) for v in box):
        return None, f"box ({text}) is not finite; dropped"
    x1, x2 = (min(max(v, 0.0), float(width)) for v in (box[0], box[2]))
    y1, y2 = (min(max(v, 0.0), float(height)) for v in (box[1], box[3]))
    if x2 - x1 < min_size or y2 - y1 < min_size:
        return None, f"box ({text}) is degenerate (side < {min_size:g} px inside the {width}x{height} frame); dropped"
    clipped = (x1, y1, x2, y2)
    return clipped, "" if clipped == tuple(box) else f"box ({text}) extends outside the {width}x{height} frame; clipped"


def write_objects(root: str | Path, boxes: list[ObjectBox], unannotated: list[tuple[str, int]] = ()) -> None:
    """Write ``objects.csv`` (and ``unannotated.csv``) into a dataset directory, atomically."""
    root = Path(root)
    atomic_write_text(root / "objects.csv", csv_text(OBJECT_COLUMNS, (b.row() for b in boxes)))
    atomic_write_text(root / "unannotated.csv", csv_text(["video_id", "frame"], ([v, f] for v, f in unannotated)))


@dataclass
class VideoObjects:
    """A video's ground truth: ``frames[t]`` lists its objects; ``annotated[t]`` is False for frames
    without an annotation file."""

    video_id: str
    frames: list[list[ObjectBox]]
    annotated: list[bool]

    def targets(self, t: int, classes: list[str]) -> dict[str, torch.Tensor]:
        """Frame t as detector targets: ``boxes [N, 4]``, ``labels [N]`` (1..C, 0 is background), ``ids [N]``."""
        objects = self.frames[t]
        return {
            "boxes": torch.tensor([o.box for o in objects], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([classes.index(o.label) + 1 for o in objects], dtype=torch.long),
            "ids": torch.tensor([o.track_id for o in objects], dtype=torch.long),
        }


def read_objects(
    root: str | Path,
    video_frames: dict[str, tuple[int, int, int]],
    classes: list[str],
    problems: list[tuple[str, str]] | None = None,
) -> dict[str, VideoObjects]:
    """Read ``objects.csv`` (+ ``unannotated.csv``) of a dataset; ``video_frames[video_id] = (T, H, W)``.

    Boxes outside the frame are clipped, degenerate boxes dropped, rows naming an unknown video,
    class or frame skipped; each case is appended to ``problems`` as ``(file:line, reason)``. A video
    without rows has no objects (every frame empty).
    """
    root = Path(root)
    problems = problems if problems is not None else []
    out = {vid: VideoObjects(vid, [[] for _ in range(t)], [True] * t) for vid, (t, _, _) in video_frames.items()}
    path = root / "objects.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {root} is not a detection dataset (objects.csv lists the boxes)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = set(OBJECT_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected {', '.join(OBJECT_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            where = f"{path}:{line}"
            vid = row["video_id"]
            try:
                frame, track = int(row["frame"]), int(row["track_id"])
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                occluded = float(row["occluded"] or 0)
            except ValueError:
                problems.append((where, f"frame, track_id, box and occluded must be numbers, got {dict(row)}"))
                continue
            if vid not in out:
                problems.append((where, f"video {vid!r} is not in the dataset; row skipped"))
                continue
            frames, height, width = video_frames[vid]
            if not 0 <= frame < frames:
                problems.append((where, f"frame {frame} of {vid!r} is outside its {frames} frames; row skipped"))
                continue
            if row["label"] not in classes:
                problems.append((where, f"class {row['label']!r} is not one of {classes}; row skipped"))
                continue
            clipped, reason = clip_box(box, height, width)  # type: ignore[arg-type]
            if reason:
                problems.append((where, f"{vid} frame {frame} track {track}: {reason}"))
            if clipped is not None:
                out[vid].frames[frame].append(ObjectBox(vid, frame, track, row["label"], *clipped, occluded=occluded))
    unannotated = root / "unannotated.csv"
    if unannotated.is_file():
        with open(unannotated, newline="") as fh:
            for row in csv.DictReader(fh):
                if row["video_id"] in out and 0 <= int(row["frame"]) < len(out[row["video_id"]].annotated):
                    out[row["video_id"]].annotated[int(row["frame"])] = False
    return out


def load_detection_dataset(root: str | Path, split: str | None = None) -> tuple[list[str], dict[str, VideoObjects]]:
    """A detection dataset's ``(classes, {video_id: VideoObjects})`` for ``split`` (all videos if None);
    problems found while reading are added to the dataset's ``problems.csv``."""
    from kinetoscope.data.cache import DatasetStore

    store = DatasetStore(root)
    meta = store.meta()
    if meta.get("task") != "detection":
        raise ValueError(f"{root} is not a detection dataset (dataset.json has no \"task\": \"detection\"); "
                         "create one with `kinetoscope synth moving-objects` or `kinetoscope data import-vid`")
    classes = list(meta["classes"])
    sizes = {}
    for record in store.records(split):
        shape = store.read_frames(record.video_id).shape
        sizes[record.video_id] = (shape[0], shape[1], shape[2])
    problems: list[tuple[str, str]] = []
    objects = read_objects(root, sizes, classes, problems)
    if problems:
        known = store.problems()
        store.write_problems(known + [p for p in problems if p not in known])
    return classes, objects


# ------------------------------------------------------------------------------------- ImageNet VID
def parse_vid_xml(path: Path, video_id: str, frame: int, problems: list[tuple[str, str]]) -> list[ObjectBox]:
    """The objects of one ImageNet VID annotation file (``<object>``: ``trackid``, ``name`` (WordNet
    id), ``bndbox`` (xmin, ymin, xmax, ymax; inclusive pixel indices), ``occluded``)."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        problems.append((str(path), f"not a readable XML file ({exc}); frame treated as unannotated"))
        raise
    boxes = []
    for index, obj in enumerate(root.iter("object")):
        try:
            wnid = obj.findtext("name", "").strip()
            bnd = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr, arg-type]
            track = int(obj.findtext("trackid", str(index)))
            occluded = float(obj.findtext("occluded", "0") or 0)
        except (AttributeError, TypeError, ValueError):
            problems.append((str(path), f"object {index} lacks a numeric bndbox/trackid; skipped"))
            continue
        boxes.append(ObjectBox(video_id, frame, track, VID_CLASSES.get(wnid, wnid), x1, y1, x2 + 1, y2 + 1, occluded))
    return boxes


def import_imagenet_vid(
    vid_root: str | Path,
    out_dir: str | Path,
    split: str = "val",
    *,
    short_side: int | None = None,
    max_videos: int | None = None,
) -> Path:
    """Convert ImageNet VID snippets of ``split`` into a kinetoscope detection dataset in ``out_dir``.

    Frames are read with OpenCV and optionally resized to ``short_side`` (boxes scaled alike; the
    document tests at short side 600). An image without its annotation file is kept and listed in
    ``unannotated.csv``; an annotation without its image ends the snippet there (the frames after a
    hole cannot be placed in time). Both go to ``problems.csv``. Snippets already converted are skipped.
    """
    import cv2

    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord
    from kinetoscope.utils import progress

    vid_root = Path(vid_root)
    images = vid_root / "Data" / "VID" / split
    annotations = vid_root / "Annotations" / "VID" / split
    if not images.is_dir():
        raise FileNotFoundError(f"{images} is missing: expected the ImageNet VID layout Data/VID/{split}/<snippet>/")
    store = DatasetStore(out_dir)
    snippets = sorted(p for p in images.iterdir() if p.is_dir())[:max_videos]
    problems: list[tuple[str, str]] = []
    boxes: list[ObjectBox] = []
    unannotated: list[tuple[str, int]] = []
    records = []
    for snippet in progress(snippets, total=len(snippets), description=f"ImageNet VID {split}"):
        video_id = snippet.name
        jpegs = {int(p.stem): p for p in snippet.glob("*.JPEG") if p.stem.isdigit()}
        xmls = {int(p.stem): p for p in (annotations / video_id).glob("*.xml") if p.stem.isdigit()}
        count = 0
        while count in jpegs:
            count += 1
        for frame in sorted(set(xmls) | set(jpegs)):
            if frame >= count:
                problems.append((str(xmls.get(frame, jpegs.get(frame))),
                                 f"frame {frame} comes after missing image {count:06d}.JPEG; snippet cut at {count}"))
                break
        if count == 0:
            problems.append((str(snippet), "no frames 000000.JPEG...; snippet skipped"))
            continue
        first = cv2.imread(str(jpegs[0]))
        height, width = first.shape[:2]
        scale = short_side / min(height, width) if short_side else 1.0
        size = (round(width * scale), round(height * scale))
        if not store.has_frames(video_id):
            frames = []
            for t in range(count):
                image = cv2.imread(str(jpegs[t]))
                if image is None:
                    raise ValueError(f"{jpegs[t]}: not a readable image")
                frames.append(cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
            store.write_frames(video_id, np.stack(frames))
        for t in range(count):
            if t not in xmls:
                missing_xml = annotations / video_id / f"{t:06d}.xml"
                problems.append((str(missing_xml), "annotation file missing; frame not scored"))
                unannotated.append((video_id, t))
                continue
            try:
                objects = parse_vid_xml(xmls[t], video_id, t, problems)
            except ET.ParseError:
                unannotated.append((video_id, t))
                continue
            for o in objects:
                o.x1, o.y1, o.x2, o.y2 = (v * scale for v in o.box)
            boxes += objects
        records.append(VideoRecord(video_id=video_id, label="", path=str(snippet), split=split, fps=30.0,
                                   num_frames=count, duration=count / 30.0))
    write_objects(out_dir, boxes, unannotated)
    store.write_records(records)
    store.write_problems(problems)
    store.write_meta({"name": f"imagenet-vid-{split}", "task": "detection", "classes": list(VID_CLASSES.values()),
                      "source": str(vid_root), "split": split, "short_side": short_side, "channels": 3})
    return Path(out_dir)


def class_counts(objects: dict[str, VideoObjects]) -> dict[str, int]:
    """Boxes per class over all videos."""
    counts: dict[str, int] = defaultdict(int)
    for video in objects.values():
        for frame in video.frames:
            for o in frame:
                counts[o.label] += 1
    return dict(counts)
