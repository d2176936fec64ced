"""The on-disk dataset store that ``data prepare`` and the synthetic generators both write.

Layout of a dataset directory (docs/architecture.md)::

    <root>/
      dataset.json       name, classes (ordered), fps, frame size, channels, source, ...
      annotations.csv    one VideoRecord per row (video_id,label,path,subject,split,domain,...)
      frames/<id>.npy    uint8 [T, H, W, C], opened memory-mapped
      flow/<id>.npy      float16 [T, H, W, 2|3] optical flow, when computed
      problems.csv       files that could not be used, and why

Every write is atomic (temp file + rename), so an interrupted job leaves whole files only and a
re-run skips what exists.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from kinetoscope.data.index import RECORD_COLUMNS, VideoRecord
from kinetoscope.utils import atomic_save_npy, atomic_write_json, atomic_write_text, csv_text

_SAFE_ID = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_id(text: str) -> str:
    """A file-name-safe video id derived from a path or name: non-ASCII letters transliterated
    (``日本`` -> ``RiBen``, ``café`` -> ``cafe``; ASCII text is unchanged), anything else but letters,
    digits and ``. _ = -`` replaced by ``_``. Names that differ only in what this drops get a hash
    suffix from ``annotations.distinct_video_ids``."""
    if not text.isascii():
        from anyascii import anyascii

        text = anyascii(text)
    return _SAFE_ID.sub("_", text).strip("_") or "video"


class DatasetStore:
    """Read and write a cached dataset directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- paths --------------------------------------------------------------------------------
    @property
    def annotations_path(self) -> Path:
        return self.root / "annotations.csv"

    @property
    def meta_path(self) -> Path:
        return self.root / "dataset.json"

    @property
    def problems_path(self) -> Path:
        return self.root / "problems.csv"

    def frames_path(self, video_id: str) -> Path:
        return self.root / "frames" / f"{video_id}.npy"

    def flow_path(self, video_id: str) -> Path:
        return self.root / "flow" / f"{video_id}.npy"

    # -- metadata -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.annotations_path.is_file() and self.meta_path.is_file()

    def write_meta(self, meta: dict[str, Any]) -> None:
        atomic_write_json(self.meta_path, meta)

    def meta(self) -> dict[str, Any]:
        if not self.meta_path.is_file():
            raise FileNotFoundError(
                f"{self.root} is not a kinetoscope dataset: {self.meta_path.name} is missing "
                "(create one with `kinetoscope data prepare` or `kinetoscope synth ...`)"
            )
        return json.loads(self.meta_path.read_text())

    @property
    def classes(self) -> list[str]:
        return list(self.meta()["classes"])

    # -- annotations --------------------------------------------------------------------------
    def write_records(self, records: Iterable[VideoRecord]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=RECORD_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow(r.to_row())
        atomic_write_text(self.annotations_path, buf.getvalue())

    def records(self, split: str | None = None) -> list[VideoRecord]:
        if not self.annotations_path.is_file():
            raise FileNotFoundError(f"annotations file not found: {self.annotations_path}")
        with open(self.annotations_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        try:
            records = [VideoRecord.from_row(r) for r in rows]
        except ValueError as exc:
            raise ValueError(f"{self.annotations_path}: {exc}") from None
        if split is not None:
            records = [r for r in records if r.split == split]
        return records

    def write_problems(self, problems: Iterable[tuple[str, str]]) -> None:
        atomic_write_text(self.problems_path, csv_text(["path", "problem"], problems))  # type: ignore[arg-type]

    def problems(self) -> list[tuple[str, str]]:
        if not self.problems_path.is_file():
            return []
        with open(self.problems_path, newline="") as fh:
            rows = list(csv.reader(fh))
        return [(r[0], r[1]) for r in rows[1:] if len(r) >= 2]

    # -- arrays -------------------------------------------------------------------------------
    def has_frames(self, video_id: str) -> bool:
        return self.frames_path(video_id).is_file()

    def write_frames(self, video_id: str, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(f"frames of {video_id!r} must be uint8 [T,H,W,C], got {frames.dtype} {frames.shape}")
        atomic_save_npy(self.frames_path(video_id), frames)

    def read_frames(self, video_id: str, mmap: bool = True) -> np.ndarray:
        """uint8 ``[T, H, W, C]``; memory-mapped by default (no copy until indexed)."""
        path = self.frames_path(video_id)
        if not path.is_file():
            raise FileNotFoundError(f"cached frames missing for video {video_id!r}: {path}")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)

    def has_flow(self, video_id: str) -> bool:
        return self.flow_path(video_id).is_file()

    def write_flow(self, video_id: str, flow: np.ndarray) -> None:
        atomic_save_npy(self.flow_path(video_id), flow.astype(np.float16))

    def read_flow(self, video_id: str, mmap: bool = True) -> np.ndarray:
        path = self.flow_path(video_id)
        if not path.is_file():
            raise FileNotFoundError(f"cached flow missing for video {video_id!r}: {path}")
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
