"""Clip sampling: uniform, dense windows (Broomé 2022), jitter, oversampling, segments, short videos."""

from __future__ import annotations

import numpy as np
import pytest

from kinetoscope.data.sampling import (
    dense_windows,
    jitter_window,
    jittered_uniform,
    oversample_starts,
    plan_clips,
    random_stride_window,
    uniform_indices,
    window_starts,
)


def test_uniform_spans_first_to_last_frame() -> None:
    assert uniform_indices(20, 5).tolist() == [0, 5, 10, 14, 19]
    assert uniform_indices(16, 16).tolist() == list(range(16))


def test_short_video_is_padded_with_its_last_frame_or_skipped() -> None:
    assert uniform_indices(3, 5, short="pad").tolist() == [0, 1, 2, 2, 2]
    assert uniform_indices(3, 5, short="skip") is None
    assert dense_windows(7, 10, 10, short="pad")[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6]
    assert dense_windows(7, 10, 10, short="skip") == []


def test_dense_windows_back_to_back_at_stride_10_as_broome_2022() -> None:
    windows = dense_windows(35, 10, 10)
    assert [w[0] for w in windows] == [0, 10, 20]  # the 5-frame tail never makes a clip crossing the end
    assert all(len(w) == 10 and w[-1] < 35 for w in windows)
    assert [w[0] for w in dense_windows(35, 10, 5)] == [0, 5, 10, 15, 20, 25]
    assert dense_windows(30, 4, 30, step=3)[0].tolist() == [0, 3, 6, 9]


def test_plan_clips_counts_padded_and_skipped_videos() -> None:
    clips, report = plan_clips([25, 4, 12], ["a", "b", "c"], strategy="dense", frames=10, short="skip")
    assert [(c.video_id, c.start) for c in clips] == [("a", 0), ("a", 10), ("c", 0)]
    assert report.skipped == ["b"] and report.padded == []
    clips, report = plan_clips([25, 4, 12], ["a", "b", "c"], strategy="dense", frames=10, short="pad")
    assert report.padded == ["b"] and [c.clip_index for c in clips] == [0, 1, 0, 0]


def test_oversampling_balances_classes_with_windows_at_offset_L_over_2() -> None:
    # 3 no-pain videos of 60 frames (6 windows each = 18) and 2 pain videos of 40 frames (4 each = 8)
    num_frames, labels = [60, 60, 60, 40, 40], ["no", "no", "no", "pain", "pain"]
    extra = oversample_starts(num_frames, labels, length=10, stride=10, seed=0)
    assert set(extra) == {3, 4}  # only the minor class
    starts = [s for v in extra.values() for s in v]
    assert all(s % 10 == 5 and s + 10 <= 40 for s in starts)  # maximally off the regular grid
    # n_resample = 18 - 8 = 10 but a 40-frame video has only 3 starts at 5, 15, 25 -> capped at 6
    assert len(starts) == 6
    num_frames = [200, 200, 200, 200, 100, 100]  # majority 80 windows, minority 20: n_resample = 60
    extra = oversample_starts(num_frames, ["a"] * 4 + ["b"] * 2, length=10, stride=10)
    assert sum(len(v) for v in extra.values()) == 60 - 42  # 9 starts per 100-frame video available
    num_frames = [100, 100, 100, 100, 100, 100]  # 40 vs 20 windows: int(20 / 2) = 10 > 9 available
    extra = oversample_starts(num_frames, ["a"] * 4 + ["b"] * 2, length=10, stride=10)
    assert sorted(extra) == [4, 5] and [len(v) for v in extra.values()] == [9, 9]


def test_oversampling_stops_at_exactly_n_resample_when_fewer_than_one_per_video() -> None:
    # class a: 6 videos x 3 windows = 18; class b: 4 videos x 4 windows = 16 -> n_resample = 2 < M = 4
    extra = oversample_starts([30] * 6 + [40] * 4, ["a"] * 6 + ["b"] * 4, length=10, seed=1)
    assert sum(len(v) for v in extra.values()) == 2 and all(len(v) == 1 for v in extra.values())
    assert set(extra) <= {6, 7, 8, 9}
    # n_resample = 8 over M = 3 videos: int(8 / 3) = 2 each, then topped up to exactly 8
    extra = oversample_starts([40] * 3 + [40] * 5, ["b"] * 3 + ["a"] * 5, length=10)
    assert sum(len(v) for v in extra.values()) == 8


def test_plan_clips_with_oversampling_marks_extra_clips() -> None:
    clips, report = plan_clips(
        [40, 20], ["big", "small"], strategy="dense", frames=10, oversample_labels=["x", "y"]
    )
    extra = [c for c in clips if c.oversampled]
    assert (
        report.oversampled_clips == len(extra) == 1 and extra[0].video_id == "small" and extra[0].start == 5
    )


def test_jitter_stays_inside_the_video_and_is_reproducible() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = jittered_uniform(37, 8, rng)
        assert len(idx) == 8 and idx.min() >= 0 and idx.max() < 37 and np.all(np.diff(idx) > 0)
        shifted = jitter_window(np.arange(30, 40), 42, 5, rng)
        assert shifted.min() >= 25 and shifted.max() <= 41 and np.all(np.diff(shifted) == 1)
        tau_clip = random_stride_window(100, 10, (2, 8), rng)
        assert tau_clip.max() < 100 and len(set(np.diff(tau_clip))) == 1
    a = jittered_uniform(100, 8, np.random.default_rng(3))
    b = jittered_uniform(100, 8, np.random.default_rng(3))
    assert a.tolist() == b.tolist()


def test_window_starts_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="stride=0"):
        window_starts(10, 5, 0)
