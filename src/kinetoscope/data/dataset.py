"""Clip datasets over a cached dataset directory (see ``kinetoscope.data.cache``).

A sample is the batch dict of docs/architecture.md: ``video`` float32 ``[C, T, H, W]`` in [0, 1] (before any
``Normalize``), ``label`` (class index), ``video_id``, ``subject``, ``clip_index``; ``flow`` float32
``[2|3, T, H, W]`` with ``flow=True``.

Which clips exist is decided once by ``data.sampling.plan_clips`` (uniform, dense windows with the
Broomé 2022 oversampling, or all frames); ``jitter=True`` re-draws the frames of each clip on every
access (training), and ``transform`` applies one augmentation per clip to every frame and to the
aligned flow. Frames are read from memory-mapped ``.npy`` files opened per access, so memory does not
grow with the number of videos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.sampling import (
    ClipSpec,
    SamplingReport,
    gaussian_start_indices,
    jitter_window,
    jittered_uniform,
    plan_clips,
    random_stride_window,
)
from kinetoscope.data.transforms import to_float


def _num_frames(path: Path) -> int:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    n = int(array.shape[0])
    del array
    return n


class ClipDataset(Dataset):
    """Clips of a cached dataset. Defaults: one clip per video, ``frames`` uniform indices (or all
    frames when ``frames`` is ``None``).

    ``reverse=True`` returns every clip with its frames in reverse order (the reversal probe, Mänttäri 2020
    §4.2); reversed flow also changes sign. ``classes`` fixes the label order (default: the store's
    own). ``subjects`` keeps only those subjects' videos (for subject-exclusive folds).

    Sampling: ``sampling="uniform" | "dense" | "all"``; ``stride`` (dense windows, default ``frames``)
    and ``step`` (frames between clip frames); ``oversample=True`` adds the Broomé 2022 minority-class
    windows (dense); ``short="pad" | "skip"`` for videos shorter than a clip (counted in
    ``self.report``); ``jitter=True`` draws fresh positions per access (segment-random for uniform,
    a shift of up to ``stride // 2`` for dense); with ``strides=(lo, hi)`` as well, every access
    draws a random spacing in ``lo..hi`` and a random start instead (frame-rate jitter, Feichtenhofer
    2017 Ch. 3); ``clip_start="gaussian"`` draws every access's clip start from ``N(L/4, (L/6)²)`` on
    ``[0, L/2]`` with frames ``step`` apart (Stergiou 2021 §5.4.1). ``labels`` holds one class index per
    *clip*.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        frames: int | None = None,
        reverse: bool = False,
        classes: list[str] | None = None,
        *,
        sampling: str | None = None,
        stride: int | None = None,
        step: int = 1,
        oversample: bool = False,
        short: str = "pad",
        jitter: bool = False,
        strides: tuple[int, int] | None = None,
        transform: Callable | None = None,
        flow: bool = False,
        subjects: Sequence[str] | None = None,
        seed: int = 0,
        clip_start: str = "planned",
    ) -> None:
        if clip_start not in ("planned", "gaussian"):
            raise ValueError(f"clip_start={clip_start!r} must be 'planned' or 'gaussian' (Stergiou 2021 §5.4.1)")
        self.clip_start = clip_start
        self.store = DatasetStore(root)
        self.classes = list(classes) if classes is not None else self.store.classes
        records = self.store.records(split)
        if subjects is not None:
            wanted = {str(s) for s in subjects}
            records = [r for r in records if r.subject in wanted]
        if not records:
            raise ValueError(self._empty_message(split, subjects))
        index = {c: i for i, c in enumerate(self.classes)}
        unknown = sorted({r.label for r in records if r.label not in index})
        if unknown:
            raise ValueError(
                f"{self.store.annotations_path}: label(s) {unknown} not among the classes {self.classes}"
            )
        if flow:
            missing = [r.video_id for r in records if not self.store.has_flow(r.video_id)]
            if missing:
                raise FileNotFoundError(
                    f"flow=True but {len(missing)} videos have no {self.store.root}/flow/<id>.npy "
                    f"(e.g. {missing[0]!r}); compute flow first"
                )
        self.records = records
        self.video_labels = [index[r.label] for r in records]
        self.frames = frames
        self.reverse = reverse
        self.sampling = sampling or ("uniform" if frames else "all")
        self.stride = stride or frames
        self.step = step
        self.jitter = jitter
        self.strides = tuple(strides) if strides is not None else None
        if self.strides is not None and not frames:
            raise ValueError("frame-rate jitter (strides) needs a clip length (frames)")
        self.transform = transform
        self.flow = flow
        self.num_frames = [_num_frames(self.store.frames_path(r.video_id)) for r in records]
        self.clips: list[ClipSpec]
        self.report: SamplingReport
        self.clips, self.report = plan_clips(
            self.num_frames,
            [r.video_id for r in records],
            strategy=self.sampling,
            frames=frames,
            stride=self.stride,
            step=step,
            short=short,
            oversample_labels=self.video_labels if oversample else None,
            seed=seed,
        )
        if not self.clips:
            raise ValueError(
                f"no clips: {self.report} (videos shorter than {frames} frames with short={short!r})"
            )
        self.labels = [self.video_labels[c.video_index] for c in self.clips]

    def _empty_message(self, split: str | None, subjects: Sequence[str] | None) -> str:
        """Why no video was selected, and how to fix it."""
        everything = self.store.records()
        path = self.store.annotations_path
        if subjects is not None:
            known = sorted({r.subject for r in everything if r.split == split or split is None})
            return f"no videos of subjects {sorted(subjects)} in {path}; its subjects are {known}"
        splits = sorted({r.split for r in everything if r.split})
        if not splits:
            return (
                f"no videos in split {split!r}: {path} gives no video a split. Add a 'split' column "
                f"(train/val) to your annotations and run `data prepare` again, or choose videos by subject "
                f"(--set data.train_subjects=[a,b] --set data.val_subjects=[c]), or cross-validate over "
                f"subjects with `kinetoscope cv`"
            )
        return f"no videos in split {split!r} of {path}; its splits are {splits} (set data.train_split/val_split)"

    def __len__(self) -> int:
        return len(self.clips)

    def _indices(self, clip: ClipSpec, generator: torch.Generator | None) -> np.ndarray:
        idx = np.asarray(clip.frame_indices, dtype=np.int64)
        n = self.num_frames[clip.video_index]
        if self.clip_start == "gaussian":  # a fresh start per access: N(L/4, (L/6)²) on [0, L/2]
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))
            return gaussian_start_indices(n, len(idx), self.step, rng)
        if not self.jitter or clip.padded:
            return idx
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=generator)))
        if self.strides is not None:
            drawn = random_stride_window(n, len(idx), self.strides, rng)
            return idx if drawn is None else drawn
        if self.sampling == "uniform":
            return jittered_uniform(n, len(idx), rng)  # type: ignore[return-value]
        if self.sampling == "dense":
            return jitter_window(idx, n, (self.stride or len(idx)) // 2, rng)
        return idx

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Clip ``key``, or ``(index, seed)``: the seed fixes the clip's random draws (jitter and
        augmentation), as :class:`~kinetoscope.data.datamodule.EpochSampler` gives them so that an
        interrupted run resumes with the same draws. A bare index draws its seed from torch's global RNG."""
        i, seed = key if isinstance(key, tuple) else (key, None)
        clip = self.clips[i]
        record = self.records[clip.video_index]
        generator = None
        if self.jitter or self.transform is not None or self.clip_start == "gaussian":  # RNG only if needed
            if seed is None:
                seed = int(torch.randint(0, 2**62, ()))
            generator = torch.Generator().manual_seed(seed)
        idx = self._indices(clip, generator)
        if self.reverse:
            idx = idx[::-1]
        array = self.store.read_frames(record.video_id)
        video = torch.from_numpy(np.ascontiguousarray(array[idx])).permute(3, 0, 1, 2)  # uint8 [C, T, H, W]
        del array
        flow = None
        if self.flow:
            flow_array = self.store.read_flow(record.video_id)
            fidx = np.minimum(idx, flow_array.shape[0] - 1)
            flow = torch.from_numpy(np.ascontiguousarray(flow_array[fidx], dtype=np.float32)).permute(
                3, 0, 1, 2
            )
            del flow_array
            if self.reverse:
                flow[:2] = -flow[:2]
        if self.transform is not None:
            video, flow = self.transform(video, flow, generator)
        video = to_float(video)
        sample = {
            "video": video.contiguous(),
            "label": self.labels[i],
            "video_id": record.video_id,
            "subject": record.subject,
            "clip_index": clip.clip_index,
        }
        if flow is not None:
            sample["flow"] = flow.contiguous()
        return sample
