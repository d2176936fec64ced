"""Video reading with PyAV: metadata, decoding to ``uint8 [T, H, W, C]``, resampling by timestamps.

Implements the frame extraction of the pain pipeline (Broomé 2022 §3.1–3.3: frames at 2 fps) and the
benchmark conventions (Feichtenhofer 2017 Ch. 3: short side rescaled, e.g. to 256) for any source frame rate:

* **Resampling uses the decoded presentation timestamps**, not the nominal frame rate, so variable
  frame-rate files come out evenly spaced in time. Output frame ``k`` is the frame *on screen* at
  time ``t0 + k / fps`` (the last decoded frame whose timestamp is ``<=`` that time), for every
  such time before the end of the video (the end of the last frame, whose duration is the median
  frame interval).
* ``size``: an ``int`` resizes the shorter side to it (aspect kept), ``(h, w)`` resizes exactly.
* A folder of ``jpg``/``png`` images (sorted by the numbers in their names) is read as a video with
  a frame rate given by ``folder_fps`` (the folder itself carries none).

Every failure raises :class:`VideoError` whose ``reason`` is a short, user-facing cause (it goes into
``problems.csv``): missing path, empty file, not a video, no video stream, truncated, unreadable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_FOLDER_FPS = 25.0

Size = int | tuple[int, int] | None


class VideoError(Exception):
    """A video that cannot be used; ``reason`` is the short cause written to ``problems.csv``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class VideoInfo:
    """Metadata of a video file or frame folder. ``size`` is ``(height, width)``; ``frames`` is the
    container's frame count, or duration × fps when the container does not store it
    (``frames_exact=False``)."""

    path: str
    fps: float
    frames: int
    size: tuple[int, int]
    codec: str
    duration: float
    frames_exact: bool = True

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class DecodedVideo:
    """Frames ``uint8 [T, H, W, C]`` and the time (s, from the video start) each one shows."""

    frames: np.ndarray
    timestamps: np.ndarray
    info: VideoInfo


def is_frame_folder(path: str | Path) -> bool:
    """True when ``path`` is a directory holding image files (a video stored as frames)."""
    path = Path(path)
    return path.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _frame_files(path: Path) -> list[Path]:
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
    if not files:
        raise VideoError(path, f"folder holds no frames (expected {', '.join(IMAGE_EXTENSIONS)} files)")
    return files


def _check_path(path: Path) -> None:
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")


def _open(path: Path):
    import av

    try:
        container = av.open(str(path))
    except av.error.InvalidDataError:
        raise VideoError(path, "not a video: the container format is not recognised") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(path, f"cannot open: {exc}") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" not in kinds:
            found = f"streams: {', '.join(kinds)}" if kinds else "no streams"
            raise VideoError(
                path, f"no video stream ({found}): truncated (the index is missing) or not a video"
            )
        raise VideoError(path, f"no video stream (the file holds only: {', '.join(kinds)})")
    return container


def video_info(path: str | Path, folder_fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
    """Metadata of a video file or a frame folder, read from headers only (no decoding)."""
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        files = _frame_files(path)
        import cv2

        first = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise VideoError(files[0], "not an image")
        return VideoInfo(
            str(path),
            float(folder_fps),
            len(files),
            (int(first.shape[0]), int(first.shape[1])),
            files[0].suffix.lstrip(".").lower(),
            len(files) / float(folder_fps),
        )
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        frames = int(stream.frames) if stream.frames else int(round(duration * fps))
        if duration == 0.0 and fps > 0:
            duration = frames / fps
        codec = stream.codec_context.name
        return VideoInfo(
            str(path),
            fps,
            frames,
            (int(stream.height), int(stream.width)),
            codec,
            duration,
            frames_exact=bool(stream.frames),
        )
    finally:
        container.close()


def output_size(height: int, width: int, size: Size) -> tuple[int, int]:
    """``(h, w)`` after resizing: ``int`` = shorter side (aspect kept), tuple = exact, ``None`` = same."""
    if size is None:
        return height, width
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scale = size / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))
    h, w = size
    return int(h), int(w)


def _convert(image: np.ndarray, size: Size, grayscale: bool) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    oh, ow = output_size(h, w, size)
    if (oh, ow) != (h, w):
        interp = cv2.INTER_AREA if oh * ow < h * w else cv2.INTER_LINEAR
        image = cv2.resize(image, (ow, oh), interpolation=interp)
    if grayscale:
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return image.reshape(oh, ow, 1)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def _timed_frames(path: Path, start: float | None, folder_fps: float) -> Iterator[tuple[float, object]]:
    """Yield ``(timestamp, frame)`` with timestamps relative to the first frame; frames are
    ``av.VideoFrame`` or image paths (for folders)."""
    if path.is_dir():
        for i, f in enumerate(_frame_files(path)):
            yield i / folder_fps, f
        return
    import av

    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        t0 = float(stream.start_time * tb) if stream.start_time is not None else None
        if start is not None and start > 0 and t0 is not None:
            container.seek(int((start + t0) / tb), stream=stream, backward=True, any_frame=False)
        last = None
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else frame.dts
                if pts is None:
                    t = (last + 1e-6) if last is not None else 0.0
                else:
                    t = float(Fraction(pts) * tb)
                    if t0 is None:
                        t0 = t
                    t -= t0
                last = t
                yield t, frame
        except av.error.FFmpegError as exc:
            raise VideoError(
                path, f"truncated or corrupt: decoding failed after {last!r} s ({exc})"
            ) from None
    finally:
        container.close()


def _to_array(frame: object, path: Path) -> np.ndarray:
    if isinstance(frame, Path):
        import cv2

        image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoError(frame, "not an image")
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]


def decode_video(
    path: str | Path,
    fps: float | None = None,
    size: Size = None,
    grayscale: bool = False,
    start: float | None = None,
    end: float | None = None,
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> DecodedVideo:
    """Decode ``path`` to ``uint8 [T, H, W, C]`` (C = 3, or 1 with ``grayscale``) plus timestamps.

    ``fps`` resamples by timestamps (module docstring); ``None`` keeps every frame. ``start``/``end``
    (seconds) restrict decoding to a segment; an ``end`` beyond the video raises :class:`VideoError`
    ("clip longer than its video"). Output timestamps are relative to the video start.
    """
    path = Path(path)
    _check_path(path)
    info = video_info(path, folder_fps=folder_fps)
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if start is not None and end is not None and end <= start:
        raise VideoError(path, f"segment end {end} s is not after its start {start} s")
    seg_start = float(start or 0.0)

    kept: list[np.ndarray] = []
    times: list[float] = []
    step = 1.0 / fps if fps else None
    next_k = 0  # next output index when resampling
    pending: tuple[float, object] | None = None  # last frame seen at or before the next target time
    last_t = -1.0
    intervals: list[float] = []
    decoded = 0

    def emit(t: float, frame: object) -> None:
        kept.append(_convert(_to_array(frame, path), size, grayscale))
        times.append(t)

    for t, frame in _timed_frames(path, start, folder_fps):
        decoded += 1
        if last_t >= 0 and t > last_t:
            intervals.append(t - last_t)
        if t <= last_t and decoded > 1:
            continue  # duplicate or out-of-order timestamp: the earlier frame stands
        last_t = t
        if end is not None and t >= end:
            break
        if step is None:
            if t >= seg_start - 1e-9:
                emit(t, frame)
            continue
        # resampling: emit every target time passed by this frame, showing the frame held before it
        while pending is not None and seg_start + next_k * step < t - 1e-9:
            emit(seg_start + next_k * step, pending[1])
            next_k += 1
        pending = (t, frame)

    if decoded == 0:
        raise VideoError(path, "truncated or corrupt: no frame could be decoded")
    frame_interval = float(np.median(intervals)) if intervals else (1.0 / info.fps if info.fps else 0.0)
    video_end = last_t + frame_interval  # the last frame is on screen until here
    if end is not None and end > video_end + frame_interval:
        raise VideoError(path, f"segment end {end:.3f} s is beyond the end of the video ({video_end:.3f} s)")
    if start is not None and start >= video_end:
        raise VideoError(
            path, f"segment start {start:.3f} s is beyond the end of the video ({video_end:.3f} s)"
        )
    if end is None and start is None and info.frames_exact and not path.is_dir() and info.frames > 0:
        if decoded < info.frames - max(2, int(0.02 * info.frames)):
            raise VideoError(
                path, f"truncated: decoded {decoded} of the {info.frames} frames the header declares"
            )
    if step is not None and pending is not None:
        stop = min(end, video_end) if end is not None else video_end
        count = int(np.ceil((stop - seg_start) * fps - 1e-6))  # every target time before the end
        while next_k < count:
            emit(seg_start + next_k * step, pending[1])
            next_k += 1
    if not kept:
        raise VideoError(path, "no frames in the requested range")
    return DecodedVideo(np.stack(kept), np.asarray(times, dtype=np.float64), info)


def read_video(
    path: str | Path,
    fps: float | None = None,
    size: Size = None,
    grayscale: bool = False,
    start: float | None = None,
    end: float | None = None,
    folder_fps: float = DEFAULT_FOLDER_FPS,
) -> np.ndarray:
    """Frames of a video file or frame folder as ``uint8 [T, H, W, C]``; see :func:`decode_video`."""
    return decode_video(path, fps, size, grayscale, start, end, folder_fps).frames


def write_video(path: str | Path, frames: np.ndarray, fps: float = 25.0, codec: str = "mpeg4") -> None:
    """Encode ``uint8 [T, H, W, 3|1]`` frames with PyAV (used by tests, benchmarks and renderers).
    Width and height must be even for yuv420p codecs."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] not in (1, 3):
        raise ValueError(f"frames must be uint8 [T,H,W,1|3], got {frames.dtype} {frames.shape}")
    if frames.shape[3] == 1:
        frames = np.repeat(frames, 3, axis=3)
    rate = Fraction(fps).limit_denominator(1001)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1], frames.shape[2]
        stream.pix_fmt = "yuv420p"
        if codec in ("mpeg4", "libx264"):
            stream.options = {"qscale": "2"} if codec == "mpeg4" else {"crf": "10"}
        for image in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
