"""Subject-exclusive splits: LOSO with Broomé 2022's validation rule, group k-fold, official splits."""

from __future__ import annotations

import itertools

import pytest

from kinetoscope.data.index import VideoRecord
from kinetoscope.data.splits import (
    SEED000_VAL_SUBJECTS,
    Fold,
    check_exclusive,
    group_kfold,
    leave_one_subject_out,
    official_split,
)


def horses(n_subjects: int = 6, per_subject: int = 5) -> list[VideoRecord]:
    return [
        VideoRecord(video_id=f"h{s}_{k}", label="pain" if k % 2 else "no_pain", subject=str(s))
        for s in range(1, n_subjects + 1)
        for k in range(per_subject)
    ]


def assert_no_subject_in_two_parts(records: list[VideoRecord], fold: Fold) -> None:
    parts = {p: {records[i].subject for i in fold.indices(p)} for p in ("train", "val", "test")}
    for a, b in itertools.combinations(parts, 2):
        assert not parts[a] & parts[b], (fold.name, a, b)
    assert sorted(fold.train + fold.val + fold.test) == list(range(len(records)))


def test_loso_broome_validation_is_subject_5_or_1_when_5_tests() -> None:
    records = horses()
    folds = leave_one_subject_out(records, val_subjects=SEED000_VAL_SUBJECTS)
    assert [f.test_subjects for f in folds] == [[str(s)] for s in range(1, 7)]
    assert [f.val_subjects[0] for f in folds] == ["5", "5", "5", "5", "1", "5"]
    assert all(len(f.train_subjects) == 4 for f in folds)  # PF: 1 test, 1 validation, 4 train
    for fold in folds:
        assert_no_subject_in_two_parts(records, fold)


def test_loso_default_validation_is_the_next_subject() -> None:
    folds = leave_one_subject_out(horses(4))
    assert [(f.test_subjects[0], f.val_subjects[0]) for f in folds] == [
        ("1", "2"),
        ("2", "3"),
        ("3", "4"),
        ("4", "1"),
    ]


def test_loso_needs_subjects_and_known_validation_subjects() -> None:
    with pytest.raises(ValueError, match="needs a subject for every video"):
        leave_one_subject_out([VideoRecord("a", "x"), VideoRecord("b", "y", subject="1")])
    with pytest.raises(ValueError, match=r"validation subject\(s\) \['9'\]"):
        leave_one_subject_out(horses(), val_subjects=["9"])


@pytest.mark.parametrize("stratify", [True, False])
def test_group_kfold_is_subject_exclusive_and_covers_every_video(stratify: bool) -> None:
    records = horses(10, 4)
    folds = group_kfold(records, n_splits=5, stratify=stratify, seed=3)
    assert sorted(i for f in folds for i in f.test) == list(range(len(records)))
    for fold in folds:
        assert_no_subject_in_two_parts(records, fold)
        assert fold.val and fold.train


def test_official_split_and_exclusivity_check() -> None:
    records = [
        VideoRecord("a", "x", subject="g1", split="train"),
        VideoRecord("b", "x", subject="g2", split="test"),
        VideoRecord("c", "x", subject="g3", split="validation"),
    ]
    fold = official_split(records)
    assert (fold.train, fold.val, fold.test) == ([0], [2], [1])
    leaky = [
        VideoRecord("a", "x", subject="g1", split="train"),
        VideoRecord("b", "x", subject="g1", split="test"),
    ]
    with pytest.raises(ValueError, match=r"subject\(s\) \['g1'\] in both train and test"):
        official_split(leaky)
    with pytest.raises(ValueError, match="in both train and val"):
        check_exclusive(Fold("f", [0], [1], [], ["s"], ["s"], []))
