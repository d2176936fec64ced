"""Moving Objects generator, detection datasets (objects.csv) and the ImageNet VID importer."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.objects import clip_box, import_imagenet_vid, load_detection_dataset
from kinetoscope.synth.moving_objects import generate_moving_objects, moving_objects_video


def test_video_is_reproducible_and_objects_keep_identity_while_moving():
    a, boxes_a = moving_objects_video(7, frames=10, size=96, max_objects=3)
    b, boxes_b = moving_objects_video(7, frames=10, size=96, max_objects=3)
    assert np.array_equal(a, b) and boxes_a == boxes_b
    assert a.shape == (10, 96, 96, 3) and a.dtype == np.uint8
    tracks = {track: [] for frame in boxes_a for track, *_ in frame}
    for frame in boxes_a:
        for track, shape, box, occluded in frame:
            tracks[track].append((shape, box))
            assert 0 <= box[0] < box[2] <= 96 and 0 <= box[1] < box[3] <= 96 and 0 <= occluded <= 0.9
    for seen in tracks.values():
        assert len({shape for shape, _ in seen}) == 1  # an identity keeps its class
        assert len({box for _, box in seen}) > 1  # and moves


def test_boxes_cover_the_drawn_object():
    video, boxes = moving_objects_video(3, frames=2, size=64, max_objects=1)
    background, _ = moving_objects_video(3, frames=2, size=64, max_objects=0)
    _, _, (x1, y1, x2, y2), _ = boxes[0][0]
    changed = np.nonzero((video[0] != background[0]).any(-1))
    assert changed[0].min() >= y1 and changed[0].max() < y2 and changed[1].min() >= x1 and changed[1].max() < x2


def test_generated_dataset_reads_back_with_empty_videos_and_splits(tmp_path):
    root = generate_moving_objects(tmp_path / "mo", 6, frames=5, size=64, empty_videos=2, gifs=1)
    classes, objects = load_detection_dataset(root)
    assert classes == ["disc", "square", "triangle"] and len(objects) == 6
    assert all(len(f) == 0 for v in ("objects_00004", "objects_00005") for f in objects[v].frames)
    assert all(len(f) > 0 for f in objects["objects_00000"].frames)
    assert {r.split for r in DatasetStore(root).records()} <= {"train", "val"}
    assert (root / "previews" / "objects_00000.gif").is_file()
    before = (root / "frames" / "objects_00001.npy").stat().st_mtime_ns
    generate_moving_objects(tmp_path / "mo", 6, frames=5, size=64, empty_videos=2, gifs=0)  # resumes
    assert (root / "frames" / "objects_00001.npy").stat().st_mtime_ns == before


def test_out_of_frame_and_degenerate_boxes_are_clipped_or_dropped_and_reported(tmp_path):
    root = generate_moving_objects(tmp_path / "mo", 1, frames=3, size=64, split="val", gifs=0)
    rows = list(csv.reader(open(root / "objects.csv")))
    rows += [["objects_00000", "1", "7", "square", "-10", "5", "30", "80", "0"],
             ["objects_00000", "1", "8", "disc", "70", "5", "90", "20", "0"],
             ["objects_00000", "9", "9", "disc", "1", "1", "9", "9", "0"],
             ["objects_00000", "0", "9", "horse", "1", "1", "9", "9", "0"]]
    with open(root / "objects.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    _, objects = load_detection_dataset(root, "val")
    clipped = [o for o in objects["objects_00000"].frames[1] if o.track_id == 7]
    assert clipped[0].box == (0.0, 5.0, 30.0, 64.0)
    assert not any(o.track_id == 8 for o in objects["objects_00000"].frames[1])
    problems = DatasetStore(root).problems()
    reasons = " | ".join(p for _, p in problems)
    assert "clipped" in reasons and "degenerate" in reasons and "outside its 3 frames" in reasons
    assert "'horse' is not one of" in reasons
    assert all("objects.csv:" in where for where, _ in problems)


def test_clip_box():
    assert clip_box((2, 3, 5, 9), 10, 10) == ((2, 3, 5, 9), "")
    assert clip_box((float("inf"), 0, 1, 1), 10, 10)[0] is None


def _write_vid(root, snippet, frames, objects, skip_xml=(), skip_jpeg=()):
    image_dir = root / "Data" / "VID" / "val" / snippet
    xml_dir = root / "Annotations" / "VID" / "val" / snippet
    image_dir.mkdir(parents=True)
    xml_dir.mkdir(parents=True)
    for t in range(frames):
        if t not in skip_jpeg:
            cv2.imwrite(str(image_dir / f"{t:06d}.JPEG"), np.full((40, 60, 3), 30 * t % 255, np.uint8))
        if t in skip_xml:
            continue
        parts = "".join(
            f"<object><trackid>{track}</trackid><name>{wnid}</name><bndbox><xmax>{x2}</xmax><xmin>{x1}</xmin>"
            f"<ymax>{y2}</ymax><ymin>{y1}</ymin></bndbox><occluded>0</occluded><generated>0</generated></object>"
            for track, wnid, (x1, y1, x2, y2) in objects(t))
        (xml_dir / f"{t:06d}.xml").write_text(
            f"<annotation><folder>{snippet}</folder><filename>{t:06d}</filename>"
            f"<size><width>60</width><height>40</height></size>{parts}</annotation>")


def test_imagenet_vid_import_reports_missing_annotation_files(tmp_path):
    vid = tmp_path / "ILSVRC2015"
    _write_vid(vid, "ILSVRC2015_val_00000000", 4,
               lambda t: [(0, "n02691156", (5 + t, 5, 24 + t, 19)), (1, "n02084071", (50, 30, 70, 45))],
               skip_xml=(2,))
    _write_vid(vid, "ILSVRC2015_val_00000001", 3, lambda t: [])
    _write_vid(vid, "ILSVRC2015_val_00000002", 5, lambda t: [(0, "n02391049", (1, 1, 10, 10))], skip_jpeg=(3,))
    root = import_imagenet_vid(vid, tmp_path / "out", "val", short_side=20)
    classes, objects = load_detection_dataset(root, "val")
    assert len(classes) == 30 and "airplane" in classes and "zebra" in classes
    first = objects["ILSVRC2015_val_00000000"]
    assert first.annotated == [True, True, False, True]
    plane = first.frames[0][0]
    assert plane.label == "airplane" and plane.box == pytest.approx((2.5, 2.5, 12.5, 10.0))  # scale 0.5, inclusive
    dog = first.frames[0][1]
    assert dog.box == pytest.approx((25.0, 15.0, 30.0, 20.0))  # xmax 70 -> 71 px, clipped to the 60-px frame
    assert all(len(f) == 0 for f in objects["ILSVRC2015_val_00000001"].frames)  # no objects: not an error
    assert len(objects["ILSVRC2015_val_00000002"].frames) == 3  # cut at the missing image
    assert DatasetStore(root).read_frames("ILSVRC2015_val_00000000").shape == (4, 20, 30, 3)
    reasons = [p for _, p in DatasetStore(root).problems()]
    assert any("annotation file missing" in r for r in reasons)
    assert any("after missing image" in r for r in reasons)
    assert any("clipped" in r for r in reasons)
