"""VideoRecord: one video of a dataset, as every annotation parser and the cache describe it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass
class VideoRecord:
    """One labelled video. ``path`` is the source file (empty for generated data).

    ``start``/``end`` (seconds) restrict the record to a segment of the source video.
    """

    video_id: str
    label: str
    path: str = ""
    subject: str = ""
    split: str = ""
    domain: str = ""
    fps: float = 0.0
    num_frames: int = 0
    duration: float = 0.0
    start: float | None = None
    end: float | None = None

    def to_row(self) -> dict[str, str]:
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_row(cls, row: dict[str, str]) -> VideoRecord:
        """A record from an ``annotations.csv`` row; a non-numeric ``fps``, ``num_frames``, ``duration``,
        ``start`` or ``end`` raises ``ValueError`` naming the video and the column."""
        kwargs = {}
        for f in fields(cls):
            value = row.get(f.name, "")
            if value is None:
                value = ""
            try:
                if f.name in ("fps", "duration"):
                    kwargs[f.name] = float(value) if value != "" else 0.0
                elif f.name == "num_frames":
                    kwargs[f.name] = int(float(value)) if value != "" else 0
                elif f.name in ("start", "end"):
                    kwargs[f.name] = float(value) if value != "" else None
                else:
                    kwargs[f.name] = str(value)
            except ValueError:
                raise ValueError(
                    f"video {row.get('video_id', '')!r}: column {f.name!r} must be a number, got {value!r}"
                ) from None
        return cls(**kwargs)


RECORD_COLUMNS = [f.name for f in fields(VideoRecord)]
