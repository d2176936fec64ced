"""Appearance-free videos (Ilic 2024 §4.3): uniform noise per frame, motion kept, no appearance leaks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats

from kinetoscope.synth.appearance_free import appearance_free, make_appearance_free_dataset, move_noise


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture (uint8) that optical flow can track."""
    rng = np.random.default_rng(seed)
    noise = rng.random((height, width)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    blurred = (blurred - blurred.min()) / (blurred.max() - blurred.min())
    return (blurred * 255).astype(np.uint8)


def _pan(frames: int, size: int, step: tuple[int, int]) -> np.ndarray:
    """A window sliding over a large texture: the whole scene translates by ``step`` px per frame."""
    big = _texture(size * 3, size * 3, seed=1)
    dx, dy = step
    out = []
    for t in range(frames):
        y0, x0 = size - dy * t, size - dx * t  # content moves by +step when the window moves by -step
        out.append(big[y0 : y0 + size, x0 : x0 + size])
    return np.stack(out)[..., None]


def _shift_between(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dx, dy) such that ``b`` is ``a`` moved by (dx, dy), by phase correlation."""
    window = cv2.createHanningWindow(a.shape[::-1], cv2.CV_64F)
    (dx, dy), _ = cv2.phaseCorrelate(a.astype(np.float64), b.astype(np.float64), window)
    return dx, dy


def test_output_keeps_shape_and_first_frame_is_the_noise_frame():
    frames = _pan(5, 48, (2, 0))
    out = appearance_free(frames, seed=3)
    assert out.shape == frames.shape and out.dtype == np.uint8
    again = appearance_free(frames, seed=3)
    np.testing.assert_array_equal(out, again)  # bitwise reproducible for a seed


def test_single_frames_are_uniform_noise_by_chi_square():
    frames = np.repeat(_pan(4, 64, (1, 1)), 3, axis=-1)
    out = appearance_free(frames, seed=0)
    for t in range(out.shape[0]):
        counts = np.bincount(out[t].ravel(), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-3
        # and no spatial structure: neighbouring pixels are uncorrelated
        plane = out[t, ..., 0].astype(float)
        r = np.corrcoef(plane[:, :-1].ravel(), plane[:, 1:].ravel())[0, 1]
        assert abs(r) < 0.05


def test_grayscale_copies_one_noise_channel_and_colour_does_not():
    frames = np.repeat(_pan(3, 32, (1, 0)), 3, axis=-1)
    grey = appearance_free(frames, grayscale=True)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 0] == grey[..., 2]).all()
    colour = appearance_free(frames)
    assert (colour[..., 0] != colour[..., 1]).mean() > 0.9


def test_zero_flow_gives_every_frame_equal_to_the_noise_frame():
    frames = np.zeros((4, 16, 16, 1), np.uint8)
    flow = np.zeros((3, 16, 16, 2), np.float32)
    for mode in ("first-frame", "sequential"):
        out = appearance_free(frames, mode=mode, flow=flow)
        assert all((out[t] == out[0]).all() for t in range(4))


def test_integer_shift_splat_moves_noise_forward_and_refills_the_exposed_band_from_r0():
    rng = np.random.default_rng(0)
    r0 = rng.integers(0, 256, (10, 12, 1), dtype=np.uint8)
    flow = np.zeros((10, 12, 2), np.float32)
    flow[..., 0] = 2  # everything moves 2 px right
    moved = move_noise(r0, flow, r0, "splat")
    np.testing.assert_array_equal(moved[:, 2:], r0[:, :-2])
    np.testing.assert_array_equal(moved[:, :2], r0[:, :2])  # de-occluded border: R0 at that place
    sampled = move_noise(r0, flow, r0, "sample")  # the authors' code: flips the apparent shift
    np.testing.assert_array_equal(sampled[:, :-2], r0[:, 2:])
    np.testing.assert_array_equal(sampled[:, -2:], r0[:, -2:])


def test_occluded_pixel_takes_the_value_that_moved_onto_it():
    r0 = np.arange(1, 26, dtype=np.uint8).reshape(5, 5, 1)
    flow = np.zeros((5, 5, 2), np.float32)
    flow[2, 1, 0] = 1  # pixel (y=2, x=1) moves onto the static pixel (2, 2)
    moved = move_noise(r0, flow, r0, "splat")
    assert moved[2, 2, 0] == r0[2, 1, 0]  # the moving value wins the occlusion
    assert moved[2, 1, 0] == r0[2, 1, 0]  # the hole it left is refilled from R0


@pytest.mark.parametrize("step", [(3, 0), (2, -1)])
def test_sequential_noise_translates_with_the_scene(step):
    frames = _pan(5, 64, step)
    out = appearance_free(frames, mode="sequential", seed=1)
    for t in range(1, 5):
        dx, dy = _shift_between(out[t - 1, ..., 0], out[t, ..., 0])
        assert dx == pytest.approx(step[0], abs=0.5) and dy == pytest.approx(step[1], abs=0.5)


def test_first_frame_noise_is_r0_moved_by_the_single_inter_frame_flow():
    frames = _pan(4, 64, (3, 1))
    out = appearance_free(frames, mode="first-frame", seed=2)
    for t in range(1, 4):  # each frame is R0 moved once, so R0 -> R[t] is one step for every t
        dx, dy = _shift_between(out[0, ..., 0], out[t, ..., 0])
        assert dx == pytest.approx(3, abs=0.5) and dy == pytest.approx(1, abs=0.5)


def test_translating_object_noise_moves_with_the_object_and_background_noise_stays():
    size, side, step = 64, 24, 3
    background = _texture(size, size, seed=5)
    patch = _texture(side, side, seed=6)
    frames = []
    for t in range(4):
        frame = background.copy()
        frame[20 : 20 + side, 8 + step * t : 8 + step * t + side] = patch
        frames.append(frame)
    frames = np.stack(frames)[..., None]
    out = appearance_free(frames, mode="sequential", seed=4)
    for t in range(1, 4):
        x0 = 8 + step * t
        inner = (slice(24, 20 + side - 4), slice(x0 + 4, x0 + side - 4))  # object interior at frame t
        previous = out[t - 1][inner[0], inner[1].start - step : inner[1].stop - step, 0]
        assert (out[t][inner[0], inner[1], 0] == previous).mean() > 0.9  # moved by exactly `step`
    far = (slice(50, 64), slice(0, 64))  # a static part of the background
    assert (out[3][far] == out[0][far]).mean() > 0.95


def _appearance_only_dataset(root: Path, per_class: int = 40, frames: int = 4, size: int = 16) -> Path:
    """Two classes that differ in appearance only: a bright vs a dark textured square on a mid-grey
    background, both moving the same way (one random direction per clip)."""
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord

    rng = np.random.default_rng(0)
    store = DatasetStore(root)
    records = []
    for label, level in (("bright", 220), ("dark", 30)):
        for i in range(per_class):
            video = np.full((frames, size, size, 1), 128, np.uint8)
            y, x = rng.integers(3, 7, size=2)
            dy, dx = rng.integers(-1, 2, size=2)
            for t in range(frames):
                yy, xx = y + dy * t, x + dx * t
                video[t, yy : yy + 6, xx : xx + 6, 0] = level + rng.integers(-20, 20, (6, 6))
            vid = f"{label}_{i:03d}"
            store.write_frames(vid, video)
            records.append(VideoRecord(video_id=vid, label=label, split="val" if i % 4 == 0 else "train",
                                       num_frames=frames, fps=10.0))
    store.write_records(records)
    store.write_meta({"name": "appearance", "classes": ["bright", "dark"], "fps": 10, "size": [size, size],
                      "channels": 1, "frames": frames})
    return root


def test_dataset_is_written_losslessly_with_flow_and_resumes(tmp_path):
    from kinetoscope.data.cache import DatasetStore

    src = _appearance_only_dataset(tmp_path / "rgb", per_class=3)
    out = make_appearance_free_dataset(src, tmp_path / "af", seed=5)
    store = DatasetStore(out)
    assert [r.video_id for r in store.records()] == [r.video_id for r in DatasetStore(src).records()]
    vid = store.records()[0].video_id
    frames = store.read_frames(vid, mmap=False)
    expected = appearance_free(DatasetStore(src).read_frames(vid, mmap=False), seed=_seed(5, vid))
    np.testing.assert_array_equal(frames, expected)  # lossless: exactly the generated noise
    assert store.read_flow(vid).shape == (*frames.shape[:3], 2)
    assert store.meta()["appearance_free"]["mode"] == "first-frame"
    before = store.frames_path(vid).stat().st_mtime_ns
    make_appearance_free_dataset(src, out, seed=5)  # same settings: nothing is regenerated
    assert store.frames_path(vid).stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="other settings"):
        make_appearance_free_dataset(src, out, seed=6)


def test_one_frame_video_gets_zero_flow_and_a_bad_flow_method_writes_nothing(tmp_path):
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord

    src = DatasetStore(tmp_path / "src")
    src.write_frames("still", np.full((1, 8, 8, 1), 100, np.uint8))
    src.write_records([VideoRecord(video_id="still", label="a")])
    src.write_meta({"name": "one", "classes": ["a"]})
    with pytest.raises(KeyError, match="no-such-flow"):
        make_appearance_free_dataset(src.root, tmp_path / "bad", flow_method="no-such-flow")
    assert not (tmp_path / "bad").exists()
    store = DatasetStore(make_appearance_free_dataset(src.root, tmp_path / "af"))
    flow = store.read_flow("still")  # the dataset says it has flow, so every video has it
    assert flow.shape == (1, 8, 8, 2) and not flow.any()
    before = store.flow_path("still").stat().st_mtime_ns
    make_appearance_free_dataset(src.root, tmp_path / "af")  # resume: nothing left to do
    assert store.flow_path("still").stat().st_mtime_ns == before


def _seed(seed: int, vid: str):
    from kinetoscope.synth.appearance_free import video_seed

    return video_seed(seed, vid)


def test_leakage_probe_is_at_chance_on_appearance_free_frames_only(tmp_path):
    from kinetoscope.suites.appearance_free import single_frame_probe

    src = _appearance_only_dataset(tmp_path / "rgb", per_class=80)
    af = make_appearance_free_dataset(src, tmp_path / "af", write_flow=False)
    rgb = single_frame_probe(src, seed=0)
    noise = single_frame_probe(af, seed=0)
    assert rgb["accuracy"] > 0.9  # appearance alone separates the classes in RGB frames
    assert noise["chance"] == 0.5
    assert noise["ci_low"] <= 0.5 <= noise["ci_high"]  # consistent with chance
    assert noise["p_value"] > 0.01
