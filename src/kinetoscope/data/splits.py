"""Subject-exclusive train/validation/test splits, built on scikit-learn's group splitters.

* :func:`leave_one_subject_out` — Broomé 2022 §3.2–3.3: each subject is the test subject once
  (``LeaveOneGroupOut``); one other subject is the validation set and the rest train. The Broomé 2022
  rule: validation is subject 5, or subject 1 when 5 is the test subject; here
  ``val_subjects=("5", "1")`` — the first listed subject that is not the test subject. Without a list,
  the validation subject is the next subject (sorted, cyclic) after the test subject.
* :func:`group_kfold` — ``StratifiedGroupKFold`` (or ``GroupKFold``): fold k tests group-fold k and
  validates on group-fold k + 1 (cyclic).
* :func:`official_split` — the ``split`` column written by the annotation parsers (UCF101, HMDB51,
  SSv2, KTH official splits).

A :class:`Fold` holds subject lists and video indices; :func:`check_exclusive` proves that no subject
is in two of train/validation/test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kinetoscope.data.index import VideoRecord

SEED000_VAL_SUBJECTS = ("5", "1")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@dataclass
class Fold:
    """One split of a list of videos: indices into that list and the subjects behind them."""

    name: str
    train: list[int]
    val: list[int]
    test: list[int]
    train_subjects: list[str] = field(default_factory=list)
    val_subjects: list[str] = field(default_factory=list)
    test_subjects: list[str] = field(default_factory=list)

    def indices(self, part: str) -> list[int]:
        return {"train": self.train, "val": self.val, "test": self.test}[part]


def _subjects(records: Sequence[VideoRecord], what: str) -> np.ndarray:
    missing = [r.video_id for r in records if not r.subject]
    if missing:
        raise ValueError(
            f"{what} needs a subject for every video; {len(missing)} have none "
            f"(e.g. {missing[:3]}); add a 'subject' column to the annotations"
        )
    return np.asarray([r.subject for r in records])


def _fold(name: str, groups: np.ndarray, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> Fold:
    fold = Fold(
        name,
        sorted(int(i) for i in train),
        sorted(int(i) for i in val),
        sorted(int(i) for i in test),
        sorted(set(groups[train].tolist())),
        sorted(set(groups[val].tolist())),
        sorted(set(groups[test].tolist())),
    )
    check_exclusive(fold)
    return fold


def check_exclusive(fold: Fold) -> None:
    """Raise ``ValueError`` if a subject or a video is in two of train/val/test."""
    parts = {
        "train": set(fold.train_subjects),
        "val": set(fold.val_subjects),
        "test": set(fold.test_subjects),
    }
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = parts[a] & parts[b]
        if both:
            raise ValueError(f"fold {fold.name!r}: subject(s) {sorted(both)} in both {a} and {b}")
        shared = set(fold.indices(a)) & set(fold.indices(b))
        if shared:
            raise ValueError(f"fold {fold.name!r}: video index(es) {sorted(shared)[:5]} in both {a} and {b}")


def leave_one_subject_out(
    records: Sequence[VideoRecord], val_subjects: Sequence[str] | None = None, validation: bool = True
) -> list[Fold]:
    """One fold per subject (sorted): that subject tests, one other validates, the rest train.

    ``val_subjects``: priority list of validation subjects (Broomé 2022: ``SEED000_VAL_SUBJECTS``); the
    first one that is not the test subject is used. ``validation=False``: no validation subject."""
    from sklearn.model_selection import LeaveOneGroupOut

    groups = _subjects(records, "leave-one-subject-out")
    subjects = sorted(set(groups.tolist()))
    if len(subjects) < (3 if validation else 2):
        raise ValueError(
            f"leave-one-subject-out needs at least {3 if validation else 2} subjects, got {subjects}"
        )
    if val_subjects is not None:
        unknown = [s for s in val_subjects if s not in subjects]
        if unknown:
            raise ValueError(f"validation subject(s) {unknown} not among the subjects {subjects}")
    folds = []
    for rest, test in LeaveOneGroupOut().split(np.zeros(len(groups)), groups=groups):
        test_subject = groups[test[0]]
        if not validation:
            folds.append(_fold(f"test={test_subject}", groups, rest, np.array([], dtype=int), test))
            continue
        if val_subjects:
            candidates = [s for s in val_subjects if s != test_subject]
            if not candidates:
                raise ValueError(
                    f"every validation subject {list(val_subjects)} is the test subject {test_subject!r}; "
                    "list a second one to replace it"
                )
            val_subject = candidates[0]
        else:
            val_subject = subjects[(subjects.index(test_subject) + 1) % len(subjects)]
        is_val = groups[rest] == val_subject
        folds.append(_fold(f"test={test_subject}", groups, rest[~is_val], rest[is_val], test))
    return folds


def group_kfold(
    records: Sequence[VideoRecord],
    n_splits: int = 5,
    stratify: bool = True,
    seed: int = 0,
    validation: bool = True,
) -> list[Fold]:
    """``n_splits`` subject-exclusive folds. Fold k tests group-fold k and (``validation``) validates on
    group-fold k + 1; ``stratify`` balances labels with ``StratifiedGroupKFold``."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups = _subjects(records, "group k-fold")
    labels = np.asarray([r.label for r in records])
    n_groups = len(set(groups.tolist()))
    if n_splits < (3 if validation else 2) or n_splits > n_groups:
        raise ValueError(
            f"n_splits must be between {3 if validation else 2} and the number of subjects "
            f"({n_groups}), got {n_splits}"
        )
    if stratify:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    else:
        splitter = GroupKFold(n_splits=n_splits)
    parts = [test for _, test in splitter.split(np.zeros(len(groups)), labels, groups)]
    folds = []
    for k in range(n_splits):
        test = parts[k]
        val = parts[(k + 1) % n_splits] if validation else np.array([], dtype=int)
        used = set(test.tolist()) | set(val.tolist())
        train = np.array([i for i in range(len(groups)) if i not in used], dtype=int)
        folds.append(_fold(f"fold{k}", groups, train, val, test))
    return folds


def official_split(records: Sequence[VideoRecord]) -> Fold:
    """The fold given by each record's ``split`` column (train/val/test and common aliases)."""
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for i, r in enumerate(records):
        key = SPLIT_ALIASES.get(r.split.lower())
        if key is None:
            raise ValueError(f"video {r.video_id!r}: split {r.split!r} is not one of {sorted(SPLIT_ALIASES)}")
        parts[key].append(i)
    groups = np.asarray([r.subject or r.video_id for r in records])
    fold = Fold(
        "official",
        parts["train"],
        parts["val"],
        parts["test"],
        *(sorted(set(groups[parts[p]].tolist())) for p in ("train", "val", "test")),
    )
    if all(r.subject for r in records):
        check_exclusive(fold)
    return fold
