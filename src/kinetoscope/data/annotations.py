"""Annotation parsers: each turns one distribution format into :class:`VideoRecord` s.

Formats (``load_annotations(..., format=...)``):

``csv``      a table with ``path,label`` and optionally ``subject``, ``start``, ``end`` (seconds),
             ``split``, ``video_id``, ``domain``; paths relative to the CSV's folder (or ``root``).
             Labels per video, subjects per video as in the pain data (Broomé 2022 §3.1).
``folders``  ``root/<label>/<video file or frame folder>``.
``ucf101``   ``classInd.txt`` + ``trainlist0k.txt`` / ``testlist0k.txt`` (official splits,
             Feichtenhofer 2017 Ch. 3; Ilic 2024 Ch. 4). The subject is the UCF *group* ``gNN`` (clips cut from one long
             video share a group and never straddle the official splits).
``hmdb51``   ``<class>_test_split<k>.txt`` files with ``name.avi 1|2|0`` = train | test | unused
             (unused videos are left out, as in the official protocol).
``ssv2``     Something-Something v2 ``labels.json`` + ``train.json`` / ``validation.json``; the class is
             the template with its brackets removed (Mänttäri 2020 §4.1); videos ``<id>.webm``.
``kth``      ``personNN_<action>_dK_uncomp.avi``; subject = person. Splits: ``standard`` (Schüldt et
             al.: train 11–18, val 1, 4, 19–21, 23–25, test 2, 3, 5–10, 22) or ``accv`` (Mänttäri 2020 §4.1:
             train 1–16, test 17–25). With the ``00sequences.txt`` file each video splits into its
             annotated sequences (frame ranges at 25 fps -> ``start``/``end`` seconds).

Row-level problems (a missing label, a label outside the declared classes, a bad time) raise
:class:`AnnotationError` unless a ``problems`` list is passed, in which case the row is skipped and
``(path, reason)`` is appended. A file-level problem (a missing column, a missing split file) always
raises.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from kinetoscope.data.cache import safe_id
from kinetoscope.data.index import VideoRecord
from kinetoscope.data.video import VIDEO_EXTENSIONS, is_frame_folder

FORMATS = ("csv", "folders", "ucf101", "hmdb51", "ssv2", "kth")
CSV_REQUIRED = ("path", "label")
CSV_OPTIONAL = ("subject", "start", "end", "split", "video_id", "domain")
KTH_FPS = 25.0
KTH_ACTIONS = ("boxing", "handclapping", "handwaving", "jogging", "running", "walking")
KTH_SPLITS = {
    "standard": {
        "train": [11, 12, 13, 14, 15, 16, 17, 18],
        "val": [19, 20, 21, 23, 24, 25, 1, 4],
        "test": [22, 2, 3, 5, 6, 7, 8, 9, 10],
    },
    "accv": {"train": list(range(1, 17)), "test": list(range(17, 26))},
}

Problems = list[tuple[str, str]] | None


class AnnotationError(ValueError):
    """An annotation file or row that cannot be used."""


def _problem(problems: Problems, where: str, reason: str) -> None:
    if problems is None:
        raise AnnotationError(f"{where}: {reason}")
    problems.append((where, reason))


def read_classes(path: str | Path) -> list[str]:
    """Class names, one per line (``classInd.txt`` style ``"1 Name"`` lines are accepted)."""
    names = []
    for line in Path(path).read_text().splitlines():
        parts = line.strip().split()
        if not parts:
            continue
        names.append(parts[1] if len(parts) == 2 and parts[0].isdigit() else line.strip())
    return names


def video_id_for(
    path: str | Path, root: str | Path | None = None, start: float | None = None, end: float | None = None
) -> str:
    """A unique, file-name-safe id: the path relative to ``root`` without extension, plus the segment."""
    p = Path(path)
    if root is not None:
        try:
            p = p.relative_to(root)
        except ValueError:
            pass
    stem = str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else str(p)
    vid = safe_id(stem.replace("/", "__"))
    if start is not None or end is not None:
        vid += f"__{start or 0:g}-" + (f"{end:g}" if end is not None else "end")
    return safe_id(vid)


def _float(value: str, where: str, column: str, problems: Problems) -> tuple[bool, float | None]:
    if value is None or value.strip() == "":
        return True, None
    try:
        x = float(value)
    except ValueError:
        _problem(problems, where, f"column {column!r} must be a number of seconds, got {value!r}")
        return False, None
    if x < 0:
        _problem(problems, where, f"column {column!r} must be >= 0, got {value!r}")
        return False, None
    return True, x


def read_csv(
    path: str | Path,
    root: str | Path | None = None,
    classes: Sequence[str] | None = None,
    problems: Problems = None,
) -> list[VideoRecord]:
    """Parse a ``path,label[,subject][,start,end]`` CSV (module docstring). ``classes`` declares the
    accepted labels; a label outside them is a row problem."""
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in CSV_REQUIRED if c not in header]
        if missing:
            raise AnnotationError(
                f"{path}: missing column(s) {', '.join(missing)}; found {header or 'no header'}; "
                f"required: {', '.join(CSV_REQUIRED)}; optional: {', '.join(CSV_OPTIONAL)}"
            )
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    accepted = set(classes) if classes is not None else None
    records, seen, keys, fixed = [], set(), [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        rel = row["path"]
        if not rel:
            _problem(problems, where, "empty 'path'")
            continue
        label = row["label"]
        if not label:
            _problem(problems, f"{where} ({rel})", "empty 'label'")
            continue
        if accepted is not None and label not in accepted:
            _problem(problems, f"{where} ({rel})", f"unknown label {label!r}; accepted: {sorted(accepted)}")
            continue
        ok_s, start = _float(row.get("start", ""), f"{where} ({rel})", "start", problems)
        ok_e, end = _float(row.get("end", ""), f"{where} ({rel})", "end", problems)
        if not (ok_s and ok_e):
            continue
        if start is not None and end is not None and end <= start:
            _problem(problems, f"{where} ({rel})", f"'end' ({end}) must be after 'start' ({start})")
            continue
        video_path = Path(rel) if Path(rel).is_absolute() else base / rel
        explicit = bool(row.get("video_id"))
        vid = row.get("video_id") or video_id_for(rel, None, start, end)
        if vid != safe_id(vid):  # it names frames/<video_id>.npy: no separators or other unsafe characters
            _problem(
                problems,
                f"{where} ({rel})",
                f"video_id {vid!r} is not file-name safe (letters, digits and . _ = - only; e.g. {safe_id(vid)!r})",
            )
            continue
        key = _segment_key(rel, start, end)
        if (vid if explicit else key) in seen:
            what = f"duplicate video_id {vid!r}" if explicit else "duplicate video"
            _problem(problems, f"{where} ({rel})", f"{what} (same path and segment twice?)")
            continue
        seen.add(vid if explicit else key)
        keys.append(key)
        fixed.append(explicit)
        records.append(
            VideoRecord(
                video_id=vid,
                label=label,
                path=str(video_path),
                subject=row.get("subject", ""),
                split=row.get("split", ""),
                domain=row.get("domain", ""),
                start=start,
                end=end,
            )
        )
    records = distinct_video_ids(records, keys, fixed)
    taken: set[str] = set()
    for r in list(records):  # an explicit video_id equal to another row's (derived) id
        if r.video_id in taken:
            _problem(problems, r.path, f"duplicate video_id {r.video_id!r} (given in the video_id column twice?)")
            records.remove(r)
        taken.add(r.video_id)
    return records


def _segment_key(rel: str | Path, start: float | None, end: float | None) -> str:
    """What identifies one video of an annotation: its path as written there, plus the segment."""
    return str(rel) + ("" if start is None and end is None else f"#{start or 0:g}-{'' if end is None else f'{end:g}'}")


def distinct_video_ids(
    records: Sequence[VideoRecord], keys: Sequence[str], fixed: Sequence[bool] | None = None
) -> list[VideoRecord]:
    """Make derived ids distinct without renaming the videos whose ids are already distinct.

    Ids come from file names (``video_id_for``), which transliteration and ``safe_id`` can merge:
    ``café`` and ``cafè`` both give ``cafe``. Within each group of different videos (``keys``: relative
    path + segment) sharing an id, the one whose key is plain ASCII keeps it (an existing cache's ids
    stay valid) and every other gets ``-`` + 8 hex digits of the sha256 of its key, which depend on
    that video alone. ``fixed`` marks ids given explicitly (a ``video_id`` column), never changed."""
    import hashlib
    from collections import defaultdict

    fixed = list(fixed) if fixed is not None else [False] * len(records)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.video_id].append(i)
    out = list(records)
    for vid, members in groups.items():
        if len({keys[i] for i in members}) < 2:
            continue
        plain = [i for i in members if fixed[i] or keys[i].isascii()]
        keep = plain[0] if len(plain) == 1 else None
        for i in members:
            if i != keep and not fixed[i]:
                digest = hashlib.sha256(keys[i].encode("utf-8", "surrogateescape")).hexdigest()[:8]
                out[i] = replace(records[i], video_id=f"{vid}-{digest}")
    return out


def _is_video(p: Path) -> bool:
    return (p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS) or is_frame_folder(p)


def scan_class_folders(root: str | Path, problems: Problems = None) -> list[VideoRecord]:
    """``root/<label>/<video>`` where a video is a file with a video extension or a frame folder."""
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root}: not a directory (expected class folders root/<label>/<video>)")
    records = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for item in sorted(label_dir.iterdir()):
            if item.name.startswith("."):
                continue
            if _is_video(item):
                records.append(
                    VideoRecord(video_id=video_id_for(item, root), label=label_dir.name, path=str(item))
                )
            elif item.is_file():
                _problem(
                    problems,
                    str(item),
                    f"skipped: extension {item.suffix!r} is not one of {VIDEO_EXTENSIONS}",
                )
    if not records:
        raise AnnotationError(f"{root}: no videos found in class folders root/<label>/<video>")
    return records


_UCF_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def read_ucf101(
    root: str | Path, split_dir: str | Path, split: int = 1, problems: Problems = None
) -> list[VideoRecord]:
    """UCF101 official split ``split`` (1–3): ``classInd.txt``, ``trainlist0k.txt``, ``testlist0k.txt``
    in ``split_dir``; videos under ``root/<Class>/v_<Class>_gNN_cMM.avi``."""
    root, split_dir = Path(root), Path(split_dir)
    files = {
        "classes": split_dir / "classInd.txt",
        "train": split_dir / f"trainlist0{split}.txt",
        "test": split_dir / f"testlist0{split}.txt",
    }
    for name, f in files.items():
        if not f.is_file():
            raise AnnotationError(
                f"UCF101 {name} file not found: {f} (expected the official ucfTrainTestlist files)"
            )
    classes = read_classes(files["classes"])
    records = []
    for split_name in ("train", "test"):
        for n, line in enumerate(files[split_name].read_text().splitlines(), start=1):
            parts = line.strip().split()
            if not parts:
                continue
            rel = parts[0]
            where = f"{files[split_name]}:{n}"
            label = rel.split("/")[0]
            if label not in classes:
                _problem(problems, where, f"class folder {label!r} is not in {files['classes'].name}")
                continue
            m = _UCF_GROUP.search(rel)
            subject = f"g{int(m.group(1)):02d}" if m else ""
            records.append(
                VideoRecord(
                    video_id=video_id_for(rel),
                    label=label,
                    path=str(root / rel),
                    subject=subject,
                    split=split_name,
                )
            )
    return records


_HMDB_SPLIT = re.compile(r"^(?P<label>.+)_test_split(?P<k>\d)\.txt$")


def read_hmdb51(
    root: str | Path, split_dir: str | Path, split: int = 1, problems: Problems = None
) -> list[VideoRecord]:
    """HMDB51 official split ``split`` (1–3) from ``<class>_test_split<k>.txt`` files (1 = train,
    2 = test, 0 = unused and left out); videos under ``root/<class>/<name>.avi``."""
    root, split_dir = Path(root), Path(split_dir)
    files = sorted(p for p in split_dir.glob(f"*_test_split{split}.txt"))
    if not files:
        raise AnnotationError(f"{split_dir}: no HMDB51 split files *_test_split{split}.txt")
    names = {"1": "train", "2": "test"}
    records = []
    for f in files:
        label = _HMDB_SPLIT.match(f.name).group("label")  # type: ignore[union-attr]
        for n, line in enumerate(f.read_text().splitlines(), start=1):
            parts = line.strip().split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                _problem(problems, f"{f}:{n}", f"expected '<video> 0|1|2', got {line.strip()!r}")
                continue
            if parts[1] == "0":
                continue
            rel = f"{label}/{parts[0]}"
            records.append(
                VideoRecord(
                    video_id=video_id_for(rel), label=label, path=str(root / rel), split=names[parts[1]]
                )
            )
    return records


def ssv2_class(template: str) -> str:
    """The Something-Something v2 class name of a template: brackets removed."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(
    root: str | Path, label_dir: str | Path, problems: Problems = None, extension: str = ".webm"
) -> list[VideoRecord]:
    """Something-Something v2: ``labels.json`` (name -> index) and ``train.json`` / ``validation.json``
    (lists of ``{"id", "template", "label", "placeholders"}``) in ``label_dir``; videos ``root/<id>.webm``.
    The official validation set becomes split ``val``."""
    root, label_dir = Path(root), Path(label_dir)
    labels_file = label_dir / "labels.json"
    if not labels_file.is_file():
        raise AnnotationError(f"Something-Something v2 labels file not found: {labels_file}")
    labels = json.loads(labels_file.read_text())
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    known = set(classes)
    records = []
    for file_name, split_name in (("train.json", "train"), ("validation.json", "val")):
        f = label_dir / file_name
        if not f.is_file():
            raise AnnotationError(f"Something-Something v2 split file not found: {f}")
        for n, entry in enumerate(json.loads(f.read_text())):
            if "id" not in entry or "template" not in entry:
                _problem(problems, f"{f}[{n}]", f"entry needs 'id' and 'template', has {sorted(entry)}")
                continue
            label = ssv2_class(entry["template"])
            if label not in known:
                _problem(
                    problems, f"{f}[{n}] (id {entry['id']})", f"unknown class {label!r} (not in labels.json)"
                )
                continue
            vid = str(entry["id"])
            records.append(
                VideoRecord(
                    video_id=safe_id(vid), label=label, path=str(root / f"{vid}{extension}"), split=split_name
                )
            )
    return records


_KTH_NAME = re.compile(r"^person(?P<person>\d+)_(?P<action>[a-z]+)_d(?P<scene>\d)(?:_uncomp)?$")


def _kth_split(person: int, scheme: str) -> str:
    for name, people in KTH_SPLITS[scheme].items():
        if person in people:
            return name
    return ""


def _kth_sequences(path: Path, problems: Problems) -> dict[str, list[tuple[int, int]]]:
    sequences: dict[str, list[tuple[int, int]]] = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if "frames" not in line:
            continue
        name, _, ranges = line.partition("frames")
        spans = []
        for part in ranges.split(","):
            m = re.match(r"\s*(\d+)\s*-\s*(\d+)\s*$", part)
            if not m:
                _problem(problems, f"{path}:{n}", f"expected frame ranges 'a-b, c-d', got {ranges.strip()!r}")
                spans = []
                break
            spans.append((int(m.group(1)), int(m.group(2))))
        if spans:
            sequences[name.strip()] = spans
    return sequences


def read_kth(
    root: str | Path, sequences: str | Path | None = None, scheme: str = "standard", problems: Problems = None
) -> list[VideoRecord]:
    """KTH actions: ``root/<action>/personNN_<action>_dK_uncomp.avi`` (or all files directly under
    ``root``); subject ``personNN``; split by ``scheme`` (``standard`` | ``accv``). With
    ``sequences`` (``00sequences.txt``), one record per annotated sequence."""
    if scheme not in KTH_SPLITS:
        raise AnnotationError(f"unknown KTH split scheme {scheme!r}; accepted: {sorted(KTH_SPLITS)}")
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if not files:
        raise AnnotationError(f"{root}: no KTH videos (personNN_<action>_dK_uncomp.avi) found")
    spans = _kth_sequences(Path(sequences), problems) if sequences is not None else {}
    records = []
    for f in files:
        stem = f.stem
        m = _KTH_NAME.match(stem)
        if not m or m.group("action") not in KTH_ACTIONS:
            _problem(problems, str(f), f"not a KTH file name personNN_<{'|'.join(KTH_ACTIONS)}>_dK_uncomp")
            continue
        person = int(m.group("person"))
        base = VideoRecord(
            video_id="",
            label=m.group("action"),
            path=str(f),
            subject=f"person{person:02d}",
            split=_kth_split(person, scheme),
        )
        key = stem.removesuffix("_uncomp")
        if sequences is None:
            records.append(VideoRecord(**{**base.__dict__, "video_id": safe_id(key)}))
            continue
        if key not in spans:
            _problem(problems, str(f), f"no entry for {key!r} in {sequences}")
            continue
        for i, (a, b) in enumerate(spans[key]):
            records.append(
                VideoRecord(
                    **{
                        **base.__dict__,
                        "video_id": safe_id(f"{key}_seq{i}"),
                        "start": (a - 1) / KTH_FPS,
                        "end": b / KTH_FPS,
                    }
                )
            )
    return records


def load_annotations(
    source: str | Path,
    annotations: str | Path | None = None,
    format: str = "csv",
    classes: Sequence[str] | None = None,
    split: int | str | None = None,
    problems: Problems = None,
) -> list[VideoRecord]:
    """Dispatch to the parser of ``format``. ``source`` is the video root; ``annotations`` is the CSV
    file (csv), the split-file folder (ucf101, hmdb51), the label folder (ssv2) or ``00sequences.txt``
    (kth, optional). ``split``: official split number (ucf101/hmdb51, default 1) or KTH scheme.
    ``classes`` restricts the accepted labels (any format): a video of another label is a row problem."""
    if format not in FORMATS:
        raise AnnotationError(f"unknown annotation format {format!r}; accepted: {', '.join(FORMATS)}")
    source = Path(source)
    if format == "csv":
        if annotations is None:
            raise AnnotationError("format 'csv' needs an annotations file (path,label[,subject][,start,end])")
        records = read_csv(
            annotations, root=source if source.is_dir() else None, classes=classes, problems=problems
        )
    elif format == "folders":
        records = scan_class_folders(source, problems=problems)
    elif format in ("ucf101", "hmdb51"):
        if annotations is None:
            raise AnnotationError(
                f"format {format!r} needs the folder of official split files as annotations"
            )
        reader = read_ucf101 if format == "ucf101" else read_hmdb51
        records = reader(source, annotations, split=int(split or 1), problems=problems)
    elif format == "ssv2":
        records = read_ssv2(source, annotations if annotations is not None else source, problems=problems)
    else:
        records = read_kth(source, sequences=annotations, scheme=str(split or "standard"), problems=problems)
    if format != "csv":  # read_csv makes its own ids distinct (it knows which were given explicitly)
        base = source if source.is_dir() else source.parent
        records = distinct_video_ids(records, [_segment_key(_relative(r.path, base), r.start, r.end) for r in records])
    if classes is not None and format != "csv":  # read_csv checks its rows itself
        accepted = set(classes)
        for r in records:
            if r.label not in accepted:
                _problem(problems, r.path, f"unknown label {r.label!r}; accepted: {sorted(accepted)}")
        records = [r for r in records if r.label in accepted]
    return records


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return path


def class_names(records: Sequence[VideoRecord], declared: Sequence[str] | None = None) -> list[str]:
    """The ordered class list: ``declared`` when given, else the sorted labels of ``records``."""
    return list(declared) if declared is not None else sorted({r.label for r in records})


def declared_classes(format: str, annotations: str | Path | None) -> list[str] | None:
    """The class order an official format declares (UCF101 ``classInd.txt``, SSv2 ``labels.json``,
    KTH's six actions), or ``None`` when the format declares none."""
    if format == "ucf101" and annotations is not None:
        return read_classes(Path(annotations) / "classInd.txt")
    if format == "ssv2" and annotations is not None:
        labels = json.loads((Path(annotations) / "labels.json").read_text())
        return [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    if format == "kth":
        return list(KTH_ACTIONS)
    return None
