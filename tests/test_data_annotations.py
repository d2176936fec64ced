"""Annotation parsers, each on a fixture in its real distribution format."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinetoscope.data.annotations import (
    AnnotationError,
    declared_classes,
    load_annotations,
    read_csv,
    read_hmdb51,
    read_kth,
    read_ssv2,
    read_ucf101,
    scan_class_folders,
)

FIXTURES = Path(__file__).parent / "fixtures"


def test_csv_reads_path_label_subject_and_segment_times() -> None:
    records = read_csv(FIXTURES / "pain.csv", root="/videos")
    assert [r.label for r in records] == ["pain", "no_pain", "no_pain", "pain"]
    assert [r.subject for r in records] == ["1", "1", "2", "5"]
    assert records[0].path == "/videos/horse1/video_01.mp4" and records[0].start is None
    assert (records[2].start, records[2].end) == (10.0, 20.0)
    assert len({r.video_id for r in records}) == 4 and "__10-20" in records[2].video_id


def test_csv_missing_label_column_names_file_and_columns(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("path,subject\na.mp4,1\n")
    with pytest.raises(
        AnnotationError, match=r"bad.csv: missing column\(s\) label.*found \['path', 'subject'\]"
    ):
        read_csv(bad)


def test_csv_unknown_label_is_an_error_or_a_problem_row(tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text("path,label\na.mp4,pain\nb.mp4,pian\nc.mp4,\n")
    with pytest.raises(AnnotationError, match="labels.csv:3 .*unknown label 'pian'"):
        read_csv(table, classes=["pain", "no_pain"])
    problems: list[tuple[str, str]] = []
    records = read_csv(table, classes=["pain", "no_pain"], problems=problems)
    assert [r.path.split("/")[-1] for r in records] == ["a.mp4"]
    assert [p[1].split(";")[0] for p in problems] == ["unknown label 'pian'", "empty 'label'"]


def test_csv_video_id_that_is_not_file_name_safe_is_a_problem_row(tmp_path: Path) -> None:
    table = tmp_path / "ids.csv"
    table.write_text("path,label,video_id\na.mp4,x,../../escape\nb.mp4,x,horse1/v2\nc.mp4,x,horse_1.v-3\n")
    problems: list[tuple[str, str]] = []
    records = read_csv(table, problems=problems)
    assert [r.video_id for r in records] == ["horse_1.v-3"]
    assert [p[0].split(" ")[-1] for p in problems] == ["(a.mp4)", "(b.mp4)"]
    assert "video_id '../../escape' is not file-name safe" in problems[0][1] and "'horse1_v2'" in problems[1][1]


def test_csv_bad_segment_times_are_problems(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("path,label,start,end\na.mp4,x,5,2\nb.mp4,x,abc,\nc.mp4,x,1,2\n")
    problems: list[tuple[str, str]] = []
    records = read_csv(table, problems=problems)
    assert len(records) == 1 and len(problems) == 2
    assert "must be after" in problems[0][1] and "number of seconds" in problems[1][1]


def test_class_folders(tmp_path: Path) -> None:
    for label, name in [("walk", "a.mp4"), ("walk", "b.avi"), ("run", "c.mkv"), ("run", "readme.txt")]:
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / name).write_bytes(b"x")
    (tmp_path / "run" / "frames_d").mkdir()
    (tmp_path / "run" / "frames_d" / "0001.jpg").write_bytes(b"x")
    problems: list[tuple[str, str]] = []
    records = scan_class_folders(tmp_path, problems=problems)
    assert sorted((r.label, Path(r.path).name) for r in records) == [
        ("run", "c.mkv"),
        ("run", "frames_d"),
        ("walk", "a.mp4"),
        ("walk", "b.avi"),
    ]
    assert len(problems) == 1 and "readme.txt" in problems[0][0]
    declared: list[tuple[str, str]] = []
    walking = load_annotations(tmp_path, format="folders", classes=["walk"], problems=declared)
    assert [r.label for r in walking] == ["walk", "walk"]
    assert [(Path(p).name, why) for p, why in declared[1:]] == [
        ("c.mkv", "unknown label 'run'; accepted: ['walk']"),
        ("frames_d", "unknown label 'run'; accepted: ['walk']"),
    ]
    (tmp_path / "run" / "readme.txt").unlink()
    with pytest.raises(AnnotationError, match="c.mkv: unknown label 'run'"):
        load_annotations(tmp_path, format="folders", classes=["walk"])


def test_ucf101_official_split_with_groups_as_subjects() -> None:
    split_dir = FIXTURES / "ucf101" / "ucfTrainTestlist"
    records = read_ucf101("/data/UCF-101", split_dir, split=1)
    train = [r for r in records if r.split == "train"]
    test = [r for r in records if r.split == "test"]
    assert (len(train), len(test)) == (4, 3)
    assert train[0].path == "/data/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert train[0].label == "ApplyEyeMakeup" and train[0].subject == "g08"
    assert {r.subject for r in train}.isdisjoint({r.subject for r in test})
    assert declared_classes("ucf101", split_dir) == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]


def test_hmdb51_split_files_train_test_and_unused() -> None:
    records = read_hmdb51("/data/hmdb51", FIXTURES / "hmdb51" / "testTrainMulti_7030_splits", split=1)
    assert sorted((r.label, r.split) for r in records) == [
        ("brush_hair", "test"),
        ("brush_hair", "train"),
        ("cartwheel", "test"),
        ("cartwheel", "train"),
    ]
    assert all("_goo_2" not in r.path for r in records)  # marked 0: unused


def test_ssv2_template_classes_and_unknown_template_problem() -> None:
    problems: list[tuple[str, str]] = []
    records = read_ssv2("/data/20bn", FIXTURES / "ssv2" / "labels", problems=problems)
    assert [(r.video_id, r.label, r.split) for r in records] == [
        ("78687", "Moving something from left to right", "train"),
        ("42326", "Attaching something to something", "train"),
        ("100904", "Moving something from right to left", "train"),
        ("74225", "Approaching something with your camera", "val"),
    ]
    assert records[0].path == "/data/20bn/78687.webm"
    assert len(problems) == 1 and "Spinning something that quickly stops spinning" in problems[0][1]


def _kth_tree(root: Path) -> None:
    for name in [
        "person01_boxing_d1_uncomp.avi",
        "person02_walking_d2_uncomp.avi",
        "person17_running_d4_uncomp.avi",
        "person12_jogging_d3_uncomp.avi",
    ]:
        action = name.split("_")[1]
        (root / action).mkdir(parents=True, exist_ok=True)
        (root / action / name).write_bytes(b"x")


def test_kth_subjects_and_standard_and_accv_splits(tmp_path: Path) -> None:
    _kth_tree(tmp_path)
    standard = {r.subject: r.split for r in read_kth(tmp_path)}
    assert standard == {"person01": "val", "person02": "test", "person17": "train", "person12": "train"}
    accv = {r.subject: r.split for r in read_kth(tmp_path, scheme="accv")}
    assert accv == {"person01": "train", "person02": "train", "person17": "test", "person12": "train"}


def test_kth_sequences_file_gives_one_record_per_sequence(tmp_path: Path) -> None:
    _kth_tree(tmp_path)
    problems: list[tuple[str, str]] = []
    records = read_kth(tmp_path, sequences=FIXTURES / "kth" / "00sequences.txt", problems=problems)
    boxing = [r for r in records if r.label == "boxing"]
    assert len(boxing) == 4 and (boxing[0].start, boxing[0].end) == (0.0, 95 / 25)
    assert (boxing[1].start, boxing[1].end) == (95 / 25, 185 / 25)
    assert len(records) == 4 + 2 + 1
    assert len(problems) == 1 and "person12_jogging_d3" in problems[0][1]


def test_declared_classes_restrict_an_official_format_too(tmp_path: Path) -> None:
    _kth_tree(tmp_path)
    problems: list[tuple[str, str]] = []
    records = load_annotations(tmp_path, format="kth", classes=["boxing", "walking"], problems=problems)
    assert sorted(r.label for r in records) == ["boxing", "walking"]
    assert sorted((Path(p).name, why.split(";")[0]) for p, why in problems) == [
        ("person12_jogging_d3_uncomp.avi", "unknown label 'jogging'"),
        ("person17_running_d4_uncomp.avi", "unknown label 'running'"),
    ]
    assert problems[0][1].endswith("accepted: ['boxing', 'walking']")


def test_unknown_format_lists_the_accepted_ones() -> None:
    with pytest.raises(AnnotationError, match="accepted: csv, folders, ucf101, hmdb51, ssv2, kth"):
        load_annotations("/x", format="kinetics")
