"""Clip sampling: which cached frames form each clip.

Strategies (all return frame indices into a cached video of ``num_frames`` frames):

* **uniform** — ``N`` indices spread evenly over the whole video (Mänttäri 2020 §4.1: 16 frames for
  Something-Something, 32 for KTH, "sub-sampled to cover the entire sequence").
* **dense** — back-to-back or overlapping windows of length ``L`` and stride ``S`` (Broomé 2022 §3.1–3.3:
  ``L = 10``, ``S = 10`` at 2 fps; Ilic 2024 "f×r" clips use stride ``r`` inside a window).
* **jitter** (training) — uniform sampling with one random index per segment (Ilic 2024 §4.4,
  "uniform temporal sampling with jitter, random start"), a random shift of a dense window, or a
  random start and random frame spacing ``τ`` from a range (Feichtenhofer 2017 Ch. 3, frame-rate jitter:
  :func:`random_stride_window`, a building block for custom datasets; ``ClipDataset`` does not use it).
* **Gaussian start** (training) — Stergiou 2021 §5.4.1: the clip start is drawn from ``N(L/4, (L/6)²)``
  truncated to ``[0, L/2]``, frames follow at the dataset's stride (:func:`gaussian_start_indices`;
  ``ClipDataset(clip_start="gaussian")``, config ``data.clip_start``).
* **oversampling** — Broomé 2022 §3.3: extra windows for every non-majority class start on the grid
  ``L/2 + k·S``, maximally off the regular grid; ``n_resample = n_major − n_class`` clips, ``int(n_resample
  / M)`` per video, spread evenly over the valid starts (M = videos of that class, following the
  authors' code; the thesis text says all videos), topped up one clip per randomly chosen video until
  exactly ``n_resample``. Generalised from two classes to many by balancing each class to the largest.
* **segments** — start/end seconds are cut when the video is decoded (``data.video.decode_video``,
  used by ``data prepare``); a segment beyond the video is a named problem, not a shorter clip.

A clip never silently crosses a video end: a video shorter than the clip is either padded by
repeating its last frame (``short="pad"``) or skipped (``short="skip"``), and both are counted in a
:class:`SamplingReport`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SHORT_POLICIES = ("pad", "skip")
STRATEGIES = ("uniform", "dense", "all")


class ClipError(ValueError):
    """A clip that does not fit its video (e.g. a segment beyond the video's end)."""


@dataclass(frozen=True)
class ClipSpec:
    """One clip: ``frame_indices`` into cached video ``video_index`` (``video_id``)."""

    video_index: int
    video_id: str
    frame_indices: tuple[int, ...]
    clip_index: int
    padded: bool = False
    oversampled: bool = False

    @property
    def start(self) -> int:
        return self.frame_indices[0]


@dataclass
class SamplingReport:
    """Counts of what sampling did; ``padded``/``skipped`` list the video ids concerned."""

    videos: int = 0
    clips: int = 0
    oversampled_clips: int = 0
    padded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.clips} clips from {self.videos} videos ({self.oversampled_clips} oversampled); "
            f"{len(self.padded)} short videos padded, {len(self.skipped)} skipped"
        )


def _check_short(short: str) -> None:
    if short not in SHORT_POLICIES:
        raise ValueError(f"short must be one of {SHORT_POLICIES}, got {short!r}")


def pad_indices(indices: np.ndarray, num_frames: int) -> np.ndarray:
    """Replace indices past the end by the last frame (``short="pad"``)."""
    return np.minimum(np.asarray(indices, dtype=np.int64), num_frames - 1)


def uniform_indices(num_frames: int, frames: int, short: str = "pad") -> np.ndarray | None:
    """``frames`` indices spread evenly over ``[0, num_frames)``, first and last frame included.

    A video with fewer frames is padded with its last frame (``short="pad"``) or gives ``None``
    (``"skip"``). Example: ``uniform_indices(20, 5) -> [0, 5, 10, 14, 19]``."""
    _check_short(short)
    if num_frames <= 0:
        return None
    if frames >= num_frames:
        if frames > num_frames and short == "skip":
            return None
        return pad_indices(np.arange(frames), num_frames)
    return np.linspace(0, num_frames - 1, frames).round().astype(np.int64)


def window_starts(num_frames: int, length: int, stride: int, offset: int = 0) -> list[int]:
    """Starts ``offset, offset + stride, ...`` of the windows of ``length`` that fit in the video."""
    if length <= 0 or stride <= 0:
        raise ValueError(f"window length and stride must be positive, got length={length}, stride={stride}")
    return list(range(offset, num_frames - length + 1, stride))


def dense_windows(
    num_frames: int, length: int, stride: int, offset: int = 0, step: int = 1, short: str = "pad"
) -> list[np.ndarray]:
    """Windows of ``length`` frames ``step`` apart, starting every ``stride`` frames (Broomé 2022: L = S =
    10). A video shorter than one window gives one padded window or none (``short``)."""
    _check_short(short)
    span = (length - 1) * step + 1
    starts = window_starts(num_frames, span, stride, offset)
    if not starts:
        if short == "skip" or num_frames <= 0:
            return []
        return [pad_indices(np.arange(length) * step, num_frames)]
    return [s + np.arange(length) * step for s in starts]


def jittered_uniform(
    num_frames: int, frames: int, rng: np.random.Generator, short: str = "pad"
) -> np.ndarray | None:
    """Uniform sampling with jitter: the video is cut into ``frames`` equal segments and one random
    frame is drawn from each (sorted; Ilic 2024 §4.4)."""
    if frames >= num_frames:
        return uniform_indices(num_frames, frames, short)
    edges = np.linspace(0, num_frames, frames + 1)
    low = np.floor(edges[:-1]).astype(np.int64)
    high = np.maximum(np.floor(edges[1:]).astype(np.int64), low + 1)
    return np.minimum(rng.integers(low, high), num_frames - 1)


def jitter_window(
    indices: np.ndarray, num_frames: int, max_shift: int, rng: np.random.Generator
) -> np.ndarray:
    """Shift a window by a random integer in ``[-max_shift, max_shift]`` while keeping it inside the video."""
    indices = np.asarray(indices)
    if max_shift <= 0:
        return indices
    low = max(-max_shift, -int(indices.min()))
    high = min(max_shift, num_frames - 1 - int(indices.max()))
    if high < low:
        return indices
    return indices + int(rng.integers(low, high + 1))


def random_stride_window(
    num_frames: int, length: int, strides: tuple[int, int], rng: np.random.Generator, short: str = "pad"
) -> np.ndarray | None:
    """Frame-rate jitter (Feichtenhofer 2017 Ch. 3): a random spacing ``τ`` in ``[strides[0], strides[1]]`` (the
    largest that fits if the drawn one does not) and a random start."""
    _check_short(short)
    lo, hi = strides
    tau = int(rng.integers(lo, hi + 1))
    while tau > 1 and (length - 1) * tau + 1 > num_frames:
        tau -= 1
    span = (length - 1) * tau + 1
    if span > num_frames:
        return None if short == "skip" else pad_indices(np.arange(length), num_frames)
    start = int(rng.integers(0, num_frames - span + 1))
    return start + np.arange(length) * tau


def oversample_starts(
    num_frames: Sequence[int], labels: Sequence, length: int, stride: int | None = None, seed: int = 0
) -> dict[int, list[int]]:
    """Extra window starts per video for the Broomé 2022 minority-class oversampling (module docstring).

    ``num_frames``/``labels`` are per video; returns ``{video_index: [start, ...]}``. After this, every
    class has as many windows as the largest one (when there are enough valid starts).
    """
    stride = stride or length
    rng = np.random.default_rng(seed)
    offset = length // 2
    regular = defaultdict(int)
    videos = defaultdict(list)
    for i, (n, y) in enumerate(zip(num_frames, labels, strict=True)):
        regular[y] += len(window_starts(n, length, stride))
        videos[y].append(i)
    if not regular:
        return {}
    target = max(regular.values())
    extra: dict[int, list[int]] = {}
    for y in sorted(regular, key=str):
        n_resample = target - regular[y]
        if n_resample <= 0:
            continue
        candidates = {i: window_starts(num_frames[i], length, stride, offset) for i in videos[y]}
        candidates = {i: c for i, c in candidates.items() if c}
        if not candidates:
            continue
        chosen: dict[int, list[int]] = {}
        per_video = n_resample // len(videos[y])
        if per_video > 0:
            for i, c in candidates.items():
                pick = np.unique(np.linspace(0, len(c) - 1, min(per_video, len(c))).round().astype(int))
                chosen[i] = [c[k] for k in pick]
        total = sum(len(v) for v in chosen.values())
        while total < n_resample:  # top up: one more clip from each of some random videos
            open_videos = [i for i, c in candidates.items() if len(chosen.get(i, [])) < len(c)]
            if not open_videos:
                break
            for i in rng.permutation(open_videos):
                if total >= n_resample:
                    break
                unused = [s for s in candidates[int(i)] if s not in chosen.get(int(i), [])]
                chosen.setdefault(int(i), []).append(unused[len(unused) // 2])
                total += 1
        for i, starts in chosen.items():
            extra[i] = sorted(starts)
    return extra


def plan_clips(
    num_frames: Sequence[int],
    video_ids: Sequence[str],
    strategy: str = "uniform",
    frames: int | None = None,
    stride: int | None = None,
    step: int = 1,
    short: str = "pad",
    oversample_labels: Sequence | None = None,
    seed: int = 0,
) -> tuple[list[ClipSpec], SamplingReport]:
    """Clip list for a set of videos. ``strategy``: ``uniform`` (one clip of ``frames`` per video),
    ``dense`` (windows of ``frames``, ``stride`` default ``frames``, ``step`` between frames) or ``all``
    (one clip with every frame). ``oversample_labels`` (per video) adds the Broomé 2022 extra windows
    (dense only)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"sampling strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy != "all" and not frames:
        raise ValueError(f"sampling {strategy!r} needs frames (the clip length), got {frames!r}")
    if oversample_labels is not None and strategy != "dense":
        raise ValueError("oversampling re-extracts dense windows; use strategy='dense'")
    _check_short(short)
    report = SamplingReport(videos=len(video_ids))
    clips: list[ClipSpec] = []
    extra = {}
    if oversample_labels is not None:
        extra = oversample_starts(
            num_frames,
            oversample_labels,
            (frames - 1) * step + 1,  # type: ignore[operator]
            stride or frames,
            seed,
        )
    for v, (n, vid) in enumerate(zip(num_frames, video_ids, strict=True)):
        if strategy == "all":
            windows = [np.arange(n)] if n > 0 else []
        elif strategy == "uniform":
            idx = uniform_indices(n, frames, short)  # type: ignore[arg-type]
            windows = [] if idx is None else [idx]
        else:
            windows = dense_windows(n, frames, stride or frames, step=step, short=short)  # type: ignore[arg-type]
        if not windows:
            report.skipped.append(vid)
            continue
        padded = strategy != "all" and len(np.unique(windows[0])) < len(windows[0])
        if padded:
            report.padded.append(vid)
        k = 0
        for w in windows:
            clips.append(ClipSpec(v, vid, tuple(int(x) for x in w), k, padded=padded))
            k += 1
        for s in extra.get(v, []):
            clips.append(
                ClipSpec(
                    v,
                    vid,
                    tuple(int(x) for x in s + np.arange(frames) * step),
                    k,  # type: ignore[arg-type]
                    oversampled=True,
                )
            )
            k += 1
            report.oversampled_clips += 1
    report.clips = len(clips)
    return clips, report


def gaussian_clip_start(num_frames: int, rng: np.random.Generator, max_draws: int = 1000) -> int:
    """A clip start ``s ~ N(L/4, (L/6)²)`` truncated to ``[0, L/2]`` by redrawing (Stergiou 2021 §5.4.1, Fig.
    5.6: most clips then cover the middle of the video, where the action usually is). ``L = num_frames``."""
    if num_frames <= 1:
        return 0
    mean, std, high = num_frames / 4, num_frames / 6, num_frames / 2
    for _ in range(max_draws):
        s = rng.normal(mean, std)
        if 0 <= s <= high:
            return min(int(round(s)), num_frames - 1)
    return int(round(mean))  # unreachable in practice: 87 % of draws land inside [0, L/2]


def gaussian_start_indices(
    num_frames: int, frames: int, step: int, rng: np.random.Generator
) -> np.ndarray:
    """Frame indices of a clip with a Gaussian start (:func:`gaussian_clip_start`): ``frames`` frames ``step``
    apart (the dataset's temporal stride: HACS 2, Kinetics 5, MiT 3 in Stergiou 2021 §5.4.1); when they
    would run past the end, the ``frames`` indices are spread evenly over ``[s, L - 1]`` instead."""
    if frames < 1 or step < 1:
        raise ValueError(f"gaussian_start_indices: frames={frames} and step={step} must be >= 1")
    start = gaussian_clip_start(num_frames, rng)
    indices = start + step * np.arange(frames)
    if indices[-1] > num_frames - 1:
        indices = np.round(np.linspace(start, num_frames - 1, frames)).astype(np.int64)
    return indices.astype(np.int64)
