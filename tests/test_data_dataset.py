"""ClipDataset over a DatasetStore: default behaviour, sampling options, flow, DataModule seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kinetoscope.config import build_config
from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.datamodule import VideoDataModule
from kinetoscope.data.dataset import ClipDataset
from kinetoscope.data.index import VideoRecord
from kinetoscope.data.splits import leave_one_subject_out
from kinetoscope.data.transforms import RandomHorizontalFlip


def make_store(root: Path, lengths: list[int], flow: bool = False) -> DatasetStore:
    """Video k has frame t filled with the value 10k + t (so indices can be read back from pixels)."""
    store = DatasetStore(root)
    records = []
    for k, n in enumerate(lengths):
        vid = f"v{k}"
        frames = (10 * k + np.arange(n, dtype=np.uint8))[:, None, None, None] * np.ones(
            (1, 8, 8, 3), np.uint8
        )
        store.write_frames(vid, frames)
        if flow:
            u = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, 8, 8))
            store.write_flow(vid, np.stack([u, np.ones_like(u)], axis=-1))
        records.append(
            VideoRecord(
                vid,
                "pain" if k % 2 else "no_pain",
                subject=str(k % 3 + 1),
                split="train" if k < 4 else "val",
                num_frames=n,
            )
        )
    store.write_records(records)
    store.write_meta({"name": "t", "classes": ["no_pain", "pain"], "fps": 2.0})
    return store


def frame_values(video: torch.Tensor) -> list[int]:
    return (video[0, :, 0, 0] * 255).round().int().tolist()


def test_default_is_one_uniform_clip_per_video(tmp_path: Path) -> None:
    make_store(tmp_path, [20, 20, 20, 20, 20])
    ds = ClipDataset(tmp_path, split="train", frames=5)
    assert len(ds) == 4 and ds.labels == [0, 1, 0, 1]
    sample = ds[1]
    assert sample["video"].shape == (3, 5, 8, 8) and sample["video"].dtype == torch.float32
    assert frame_values(sample["video"]) == [10, 15, 20, 24, 29]
    assert (sample["video_id"], sample["subject"], sample["clip_index"], sample["label"]) == ("v1", "2", 0, 1)
    assert frame_values(ClipDataset(tmp_path, frames=5, reverse=True)[0]["video"]) == [19, 14, 10, 5, 0]
    assert ClipDataset(tmp_path)[0]["video"].shape[1] == 20  # frames=None: every frame


def test_dense_windows_with_oversampling_and_short_video_policy(tmp_path: Path) -> None:
    make_store(tmp_path, [40, 20, 40, 20, 6])
    ds = ClipDataset(tmp_path, frames=10, sampling="dense", oversample=True, short="skip")
    assert ds.report.skipped == ["v4"]
    per_label = np.bincount(ds.labels)
    assert per_label[0] == 8 and per_label[1] == 4 + 2  # 2 extra pain windows (20-frame videos: start 5)
    extra = [ds[i] for i, c in enumerate(ds.clips) if c.oversampled]
    assert [frame_values(s["video"])[0] for s in extra] == [15, 35]  # videos 1 and 3, start 5
    padded = ClipDataset(tmp_path, frames=10, sampling="dense", short="pad")
    assert padded.report.padded == ["v4"] and frame_values(padded[len(padded) - 1]["video"])[-3:] == [
        45,
        45,
        45,
    ]


def test_jitter_draws_new_positions_inside_the_video(tmp_path: Path) -> None:
    make_store(tmp_path, [50])
    ds = ClipDataset(tmp_path, frames=8, jitter=True)
    torch.manual_seed(0)
    draws = {tuple(frame_values(ds[0]["video"])) for _ in range(10)}
    assert len(draws) > 1 and all(0 <= v < 50 and list(d) == sorted(d) for d in draws for v in d)


def test_subjects_filter_and_flow_aligned_under_flip(tmp_path: Path) -> None:
    make_store(tmp_path, [10, 10, 10, 10], flow=True)
    ds = ClipDataset(tmp_path, frames=4, subjects=["1"], flow=True, transform=RandomHorizontalFlip(p=1.0))
    assert [r.video_id for r in ds.records] == ["v0", "v3"]
    sample = ds[0]
    assert sample["flow"].shape == (2, 4, 8, 8)
    assert sample["flow"][0, :, 0, 0].tolist() == [-0.0, -3.0, -6.0, -9.0] and torch.all(
        sample["flow"][1] == 1
    )
    with pytest.raises(FileNotFoundError, match="compute flow first"):
        make_store(tmp_path / "noflow", [5])
        ClipDataset(tmp_path / "noflow", flow=True)


def test_datamodule_with_loso_fold_is_reproducible(tmp_path: Path) -> None:
    make_store(tmp_path, [30] * 9)
    store = DatasetStore(tmp_path)
    fold = leave_one_subject_out(store.records())[0]
    config = build_config({
        "data": {"root": str(tmp_path), "frames": 6, "batch_size": 3, "size": 6, "augment": True, "jitter": True,
                 "train_subjects": list(fold.train_subjects), "val_subjects": list(fold.val_subjects),
                 "test_subjects": list(fold.test_subjects)},
        "train": {"seed": 5},
    })

    def first_batch() -> torch.Tensor:
        dm = VideoDataModule(config)
        dm.setup()
        torch.manual_seed(123)
        return next(iter(dm.train_dataloader()))["video"]

    a, b = first_batch(), first_batch()
    assert a.shape == (3, 3, 6, 6, 6) and torch.equal(a, b)
    dm = VideoDataModule(config)
    dm.setup()
    assert {r.subject for r in dm.datasets["test"].records} == set(fold.test_subjects)
    assert {r.subject for r in dm.datasets["train"].records} == set(fold.train_subjects)


def test_a_non_numeric_annotation_value_names_the_file_video_and_column(tmp_path: Path) -> None:
    store = make_store(tmp_path, [5, 5])
    text = store.annotations_path.read_text().splitlines()
    columns = text[0].split(",")
    row = text[2].split(",")
    row[columns.index("num_frames")] = "five"
    store.annotations_path.write_text("\n".join([text[0], text[1], ",".join(row)]) + "\n")
    expected = r"annotations\.csv: video 'v1': column 'num_frames' must be a number, got 'five'"
    with pytest.raises(ValueError, match=expected):
        ClipDataset(tmp_path)


def test_frame_rate_jitter_draws_one_stride_per_clip_from_the_range(tmp_path: Path) -> None:
    make_store(tmp_path, [25, 25])
    ds = ClipDataset(tmp_path, "train", frames=4, jitter=True, strides=(2, 3))
    torch.manual_seed(0)
    strides = set()
    for _ in range(30):
        values = frame_values(ds[0]["video"])
        gaps = set(np.diff(values).tolist())
        assert len(gaps) == 1 and 0 <= values[0] and values[-1] < 25  # one spacing, inside the video
        strides |= gaps
    assert strides == {2, 3}


def test_config_pipeline_evaluates_dense_windows_at_the_middle_stride(tmp_path: Path) -> None:
    from kinetoscope.data.datamodule import config_dataset

    make_store(tmp_path, [30, 30, 30, 30, 30])
    config = build_config({"data": {"root": str(tmp_path), "frames": 4, "sampling": "dense", "stride": 10,
                                    "frame_rate_jitter": [1, 3]}})
    val = config_dataset(config, "val")
    assert [c.frame_indices for c in val.clips[:2]] == [(0, 2, 4, 6), (10, 12, 14, 16)]
    assert not val.jitter and val.strides is None and config_dataset(config, "train").strides == (1, 3)


def test_a_dataset_without_splits_says_how_to_choose_videos(tmp_path: Path) -> None:
    store = make_store(tmp_path, [5, 5])
    store.write_records([r.__class__(**{**r.__dict__, "split": ""}) for r in store.records()])
    with pytest.raises(ValueError, match="gives no video a split.*data.train_subjects.*kinetoscope cv"):
        ClipDataset(tmp_path, "train")
    make_store(tmp_path / "named", [5, 5, 5, 5, 5])
    with pytest.raises(ValueError, match=r"its splits are \['train', 'val'\]"):
        ClipDataset(tmp_path / "named", "training")


def test_dataset_normalisation_is_the_training_frames_own_statistics(tmp_path: Path) -> None:
    from kinetoscope.data.datamodule import dataset_statistics
    from kinetoscope.train.fit import resolve_config

    make_store(tmp_path, [4, 6, 3, 5, 7])  # train: v0..v3; frame t of video k is 10k + t everywhere
    config = build_config({"data": {"root": str(tmp_path), "normalize": "dataset"}})
    values = np.concatenate([10 * k + np.arange(n) for k, n in enumerate([4, 6, 3, 5])]) / 255.0
    mean, std = dataset_statistics(config)
    assert mean == pytest.approx([values.mean()] * 3, abs=1e-6) and std == pytest.approx([values.std()] * 3, abs=1e-6)
    assert resolve_config(config).data.normalize == (mean, std)
