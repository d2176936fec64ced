"""Video data: reading (PyAV), annotations, the frame cache, clip sampling, datasets, splits.

Light to import (the CLI imports it): torch, PyAV, OpenCV and scikit-learn load only when a function
that needs them runs. ``ClipDataset``, ``VideoDataModule`` and the transforms are reached through
their modules or lazily through this package.
"""

from __future__ import annotations

from typing import Any

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.index import VideoRecord
from kinetoscope.data.video import DecodedVideo, VideoError, VideoInfo, decode_video, read_video, video_info

_LAZY = {
    "ClipDataset": "kinetoscope.data.dataset",
    "VideoDataModule": "kinetoscope.data.datamodule",
    "prepare_dataset": "kinetoscope.data.prepare",
    "inspect_dataset": "kinetoscope.data.prepare",
    "render_inspection": "kinetoscope.data.prepare",
    "load_annotations": "kinetoscope.data.annotations",
    "leave_one_subject_out": "kinetoscope.data.splits",
    "group_kfold": "kinetoscope.data.splits",
    "official_split": "kinetoscope.data.splits",
    "plan_clips": "kinetoscope.data.sampling",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kinetoscope.data' has no attribute {name!r}")


__all__ = [
    "DatasetStore",
    "DecodedVideo",
    "VideoError",
    "VideoInfo",
    "VideoRecord",
    "decode_video",
    "read_video",
    "video_info",
    *_LAZY,
]
