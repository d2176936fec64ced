"""Temporal Shape generator (Broomé 2022 §5.1; docs/deviations.md, 'Temporal Shapes')."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from kinetoscope.data.cache import DatasetStore
from kinetoscope.data.dataset import ClipDataset
from kinetoscope.synth import CLASSES, DOMAINS, generate_temporal_shapes, temporal_shapes
from kinetoscope.synth.digits import load_digits_pool, read_idx
from kinetoscope.synth.perlin import fractal_noise_stack, gradient_noise
from kinetoscope.synth.preview import write_gif
from kinetoscope.synth.temporal_shapes import integrate_with_bounce, noise_textures


# -- helpers -----------------------------------------------------------------------------------
def centroids(clip: np.ndarray) -> np.ndarray:
    """(x, y) centroid of the non-zero pixels of every frame of ``[T, H, W, 1]``; ``[T, 2]``."""
    out = []
    for frame in clip[..., 0]:
        ys, xs = np.nonzero(frame)
        out.append((xs.mean(), ys.mean()))
    return np.asarray(out)


def bounce_free(track: np.ndarray, size: int = 64, width: int = 3) -> bool:
    """True if the track never came within one step (+ rounding) of an edge, so no bounce happened."""
    step = np.abs(np.diff(track, axis=0)).max() + 2
    half = (width - 1) / 2
    lo, hi = half + step, size - 1 - half - step
    return bool((track >= lo).all() and (track <= hi).all())


def fit_circle(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares (Kasa) circle through ``points [N, 2]``: centre and radius."""
    x, y = points[:, 0], points[:, 1]
    a = np.stack([2 * x, 2 * y, np.ones_like(x)], axis=1)
    (cx, cy, c), *_ = np.linalg.lstsq(a, x**2 + y**2, rcond=None)
    return np.array([cx, cy]), float(np.sqrt(c + cx**2 + cy**2))


def tracks_of(name: str, num: int = 40, seed: int = 0, **options) -> list[np.ndarray]:
    videos, labels, names = temporal_shapes(num, "2dot", seed=seed, classes=[name], **options)
    assert names == [name] and (labels == 0).all()
    return [centroids(v) for v in videos]


# -- reproducibility, shapes, API --------------------------------------------------------------
@pytest.mark.parametrize("domain", ["2dot", "mnist-bg"])
def test_same_seed_gives_identical_bytes_and_another_seed_differs(domain):
    a, la, _ = temporal_shapes(12, domain, seed=5)
    b, lb, _ = temporal_shapes(12, domain, seed=5)
    c, _, _ = temporal_shapes(12, domain, seed=6)
    assert a.tobytes() == b.tobytes() and (la == lb).all()
    assert a.tobytes() != c.tobytes()


def test_clip_i_is_the_same_whatever_num():
    small, ls, _ = temporal_shapes(5, "mnist-bg", seed=2)
    large, ll, _ = temporal_shapes(17, "mnist-bg", seed=2)
    assert np.array_equal(small, large[:5]) and np.array_equal(ls, ll[:5])


def test_train_and_test_pools_are_independent_draws():
    train, _, _ = temporal_shapes(6, "2dot", seed=0, digit_pool="train")
    test, _, _ = temporal_shapes(6, "2dot", seed=0, digit_pool="test")
    assert not np.array_equal(train, test)


@pytest.mark.parametrize("domain", DOMAINS)
def test_shapes_dtypes_and_class_names(domain):
    videos, labels, names = temporal_shapes(8, domain, seed=1)
    assert videos.shape == (8, 20, 64, 64, 1) and videos.dtype == np.uint8
    assert labels.shape == (8,) and labels.dtype == np.int64
    assert names == CLASSES == ["circle", "spiral", "line", "rectangle", "arc"]
    assert labels.min() >= 0 and labels.max() < 5


def test_frames_and_size_options_change_the_clip_shape():
    videos, _, _ = temporal_shapes(4, "5dot", frames=12, size=48)
    assert videos.shape == (4, 12, 48, 48, 1)


def test_unknown_domain_is_an_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match="2dot, 5dot, mnist, mnist-bg"):
        temporal_shapes(1, "3dot")


def test_classes_restricts_and_reindexes_labels():
    _, labels, names = temporal_shapes(30, "2dot", classes=["arc", "line"])
    assert names == ["line", "arc"] and set(labels.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="valid classes"):
        temporal_shapes(1, classes=["triangle"])


def test_all_classes_occur_and_class_is_not_visible_in_single_frames():
    videos, labels, _ = temporal_shapes(100, "2dot", seed=3)
    assert set(labels.tolist()) == set(range(5))
    # every frame of every clip is the same 3x3 white square: appearance carries no class signal
    assert ((videos > 0).sum(axis=(2, 3, 4)) == 9).all()


# -- trajectories (2dot, dot centroid) ---------------------------------------------------------
def test_line_moves_with_constant_speed_per_axis_and_is_straight_between_bounces():
    tracks = tracks_of("line", 40)
    for track in tracks:
        steps = np.abs(np.diff(track, axis=0))
        assert (steps.max(axis=0) - steps.min(axis=0) <= 1.0 + 1e-9).all()  # |v| per axis, +-rounding
    straight = [t for t in tracks if bounce_free(t)]
    assert len(straight) >= 5
    for track in straight:
        centred = track - track.mean(axis=0)
        residual = np.linalg.svd(centred, compute_uv=False)[1] / np.sqrt(len(track))
        assert residual < 0.6  # collinear up to rounding


def test_circle_returns_near_its_start_around_a_circle_of_radius_6():
    for track in tracks_of("circle", 30):
        assert np.linalg.norm(track[-1] - track[0]) <= 5.0  # within one 2-px step (+ rounding)
        assert np.linalg.norm(track - track[0], axis=1).max() >= 10.0  # went round, not stood still
        centre, radius = fit_circle(track)
        assert 5.0 < radius < 7.2  # 19 steps of 2 px: r = 1 / sin(pi / 19) = 6.08
        # (the roll puts the two phi = 0 steps side by side: one 4-px straight stretch)
        assert np.abs(np.linalg.norm(track - centre, axis=1) - radius).max() < 1.6


def test_rectangle_has_four_axis_aligned_sides_of_five_frames():
    tracks = tracks_of("rectangle", 40)
    for track in tracks:
        steps = np.diff(track, axis=0)
        assert ((steps[:, 0] == 0) | (steps[:, 1] == 0)).all()  # every move is axis-aligned
    clean = [t for t in tracks if bounce_free(t)]
    assert len(clean) >= 5
    for track in clean:
        directions = np.sign(np.diff(track, axis=0)).astype(int)
        runs = [tuple(directions[0])]
        lengths = [1]
        for d in map(tuple, directions[1:]):
            if d == runs[-1]:
                lengths[-1] += 1
            else:
                runs.append(d)
                lengths.append(1)
        assert lengths == [5, 5, 5, 4] and len(set(runs)) == 4
        for a, b in zip(runs[:-1], runs[1:], strict=True):
            assert np.dot(a, b) == 0  # consecutive sides are perpendicular


def test_spiral_radius_grows_or_shrinks_monotonically_while_turning():
    clean = [t for t in tracks_of("spiral", 40) if bounce_free(t)]
    assert len(clean) >= 5
    for track in clean:
        speed = np.linalg.norm(np.diff(track, axis=0), axis=1)
        outward = speed[10:].sum() > speed[:9].sum()  # speed s*t grows outward, falls inward
        centre = track[0] if outward else track[-1]
        radius = np.linalg.norm(track - centre, axis=1)
        if not outward:
            radius = radius[::-1]
        assert (np.diff(radius) >= -1.5).all() and radius[-1] > radius[1]  # monotone up to rounding
        if radius.max() < 8:  # s = 0.2, 0.3: too small to resolve the winding at 1-px rounding
            continue
        offset = track - centre
        far = np.linalg.norm(offset, axis=1) >= 3
        angles = np.unwrap(np.arctan2(offset[far, 1], offset[far, 0]))
        assert np.ptp(angles) > np.pi  # it winds round its centre: a spiral, not a line


def test_arc_covers_half_a_turn_of_a_circle():
    clean = [t for t in tracks_of("arc", 40) if bounce_free(t)]
    assert len(clean) >= 5
    for track in clean:
        centre, radius = fit_circle(track)
        assert 10.5 < radius < 13.7  # 19 steps of 2 px over pi: r = 1 / sin(pi / 38) = 12.1
        angles = np.unwrap(np.arctan2(track[:, 1] - centre[1], track[:, 0] - centre[0]))
        assert abs(abs(angles[-1] - angles[0]) - np.pi) < 0.35


def test_bounce_negates_the_velocity_component_for_the_remaining_frames():
    velocities = np.tile([[3.0, 1.0]], (1, 6, 1))
    positions = integrate_with_bounce(np.array([[5.0, 0.0]]), velocities, limit=10.0)[0]
    # x: 5 -> 8; next 11 > 10 so x turns back for good: 8 -> 5 -> 2; next -1 < 0 turns again
    assert positions[:, 0].tolist() == [5.0, 8.0, 5.0, 2.0, 5.0, 8.0]
    assert positions[:, 1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_other_frame_counts_keep_the_shape_extent():
    for track in tracks_of("circle", 10, frames=40):
        assert len(track) == 40
        _, radius = fit_circle(track)
        assert 5.0 < radius < 7.2


# -- domains ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("domain", "exact", "width"), [("2dot", False, 3), ("2dot", True, 2), ("5dot", False, 5)])
def test_dot_is_a_square_of_the_documented_width_inside_the_frame(domain, exact, width):
    videos, _, _ = temporal_shapes(40, domain, seed=4, exact_width=exact)
    for frame in videos.reshape(-1, 64, 64):
        ys, xs = np.nonzero(frame)
        assert len(ys) == width * width  # whole square drawn: never cut by the border
        assert np.ptp(ys) == np.ptp(xs) == width - 1
        assert set(np.unique(frame).tolist()) == {0, 255}


def _find_digit(frame: np.ndarray, pool: np.ndarray) -> bool:
    """True if the frame is black except for one pool digit pasted somewhere."""
    d = pool.shape[-1]
    total = int(frame.sum(dtype=np.int64))
    windows = np.lib.stride_tricks.sliding_window_view(frame, (d, d))
    sums = windows.sum(axis=(2, 3), dtype=np.int64)
    for y, x in zip(*np.nonzero(sums == total), strict=True):
        if (pool == windows[y, x]).all(axis=(1, 2)).any():
            return True
    return False


def test_mnist_frames_show_one_digit_of_the_pool_on_black():
    pool = load_digits_pool(None, "train", 14)
    videos, _, _ = temporal_shapes(6, "mnist", seed=0)
    for clip in videos[..., 0]:
        assert _find_digit(clip[0], pool) and _find_digit(clip[-1], pool)
        counts = (clip > 0).sum(axis=(1, 2))
        assert (counts == counts[0]).all()  # the digit is never cut by the border


def test_mnist_bg_background_is_nonzero_dim_and_changes_every_frame():
    videos, _, _ = temporal_shapes(6, "mnist-bg", seed=0)
    corner = videos[:, :, :8, :8, 0].astype(np.int16)  # far from the object's start region
    assert (videos[:, :, :, :, 0].reshape(6, 20, -1) > 0).mean(axis=2).min() > 0.05
    assert (np.abs(np.diff(corner, axis=1)).sum(axis=(2, 3)) > 0).all()  # new field every frame
    assert int(videos.max()) == 255  # the digit's strokes
    # noise is at most 0.5 * 255 (intensity 0.5): only the 14x14 digit can be brighter
    assert ((videos > 128).sum(axis=(2, 3, 4)) <= 14 * 14).all()
    assert noise_textures(0, "train", 64).max() <= 128 and noise_textures(0, "train", 64).min() == 0


def test_train_and_test_digit_pools_are_disjoint():
    train = load_digits_pool(None, "train")
    test = load_digits_pool(None, "test")
    assert train.shape[1:] == (14, 14) and len(train) + len(test) == 1797
    assert not {d.tobytes() for d in train} & {d.tobytes() for d in test}


def _write_idx(path, images: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, images.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    data = header + images.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


def test_idx_files_are_read_and_used_as_separate_pools(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train, compress=True)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", test, compress=False)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), train)
    pool = load_digits_pool(tmp_path, "test", 14)
    expected = test.reshape(3, 14, 2, 14, 2).mean(axis=(2, 4))
    assert pool.shape == (3, 14, 14) and np.abs(pool - expected).max() <= 0.5
    videos, _, _ = temporal_shapes(3, "mnist", digits=tmp_path, digit_pool="test")
    for clip in videos[..., 0]:
        assert _find_digit(clip[0], pool)


def test_mnist_copy_named_by_the_environment_is_used_and_reported(tmp_path, monkeypatch):
    from kinetoscope.suites.temporal_shapes import digits_note
    from kinetoscope.synth import generate_temporal_shapes
    from kinetoscope.synth.digits import MNIST_ENV, describe_digits

    rng = np.random.default_rng(1)
    mnist = tmp_path / "mnist-idx"
    mnist.mkdir()
    _write_idx(mnist / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), True)
    _write_idx(mnist / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), True)
    assert "bundled" in describe_digits(None, "test") and "not MNIST" in describe_digits(None, "test")
    monkeypatch.setenv(MNIST_ENV, str(mnist))
    videos, _, _ = temporal_shapes(2, "mnist", digit_pool="test")  # no digits argument: the environment's
    pool = load_digits_pool(mnist, "test", 14)
    assert all(_find_digit(clip[0], pool) for clip in videos[..., 0])
    data = {}
    for domain, split in (("mnist-bg", "trainval"), ("mnist", "test"), ("2dot", "test")):
        data[domain] = generate_temporal_shapes(tmp_path / "data" / domain, domain=domain, num=5, split=split, size=32,
                                                frames=4, gifs=0)
    note = digits_note(data)
    assert f"MNIST-bg: MNIST train digits from {mnist / 'train-images-idx3-ubyte.gz'} (6 images" in note
    assert f"MNIST: MNIST test digits from {mnist / 't10k-images-idx3-ubyte.gz'} (4 images" in note
    assert "2Dot" not in note


def test_missing_or_malformed_idx_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        temporal_shapes(1, "mnist", digits=tmp_path, digit_pool="test")
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(ValueError, match="not an IDX file"):
        load_digits_pool(tmp_path, "train")
    _write_idx(bad, np.zeros((2, 28, 28)), compress=False)
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(ValueError, match="declares shape"):
        read_idx(bad)


# -- noise and previews -----------------------------------------------------------------------
def test_gradient_noise_is_zero_on_lattice_points_and_bounded():
    rng = np.random.default_rng(0)
    on_lattice = gradient_noise(16, 16, period=0.5, rng=rng)  # pixel centres = lattice points
    assert np.abs(on_lattice).max() < 1e-6
    noise = gradient_noise(128, 128, period=16, rng=rng)
    assert np.abs(noise).max() <= 1.0 and noise.std() > 0.1
    # smooth at the lattice scale: neighbouring pixels differ far less than the value range
    assert np.abs(np.diff(noise, axis=1)).mean() < 0.1 * np.ptp(noise)


def test_more_octaves_add_finer_detail():
    stack = fractal_noise_stack(128, 128, 5, np.random.default_rng(1), base_period=32)
    roughness = [np.abs(np.diff(layer, axis=1)).mean() / layer.std() for layer in stack]
    assert all(a < b for a, b in zip(roughness[:-1], roughness[1:], strict=True))
    assert np.abs(stack).max() <= 1.0


def test_write_gif_round_trip(tmp_path):
    frames = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    for t in range(4):
        frames[t, t, t] = 255
    path = write_gif(tmp_path / "clip.gif", frames, fps=10, scale=3)
    with Image.open(path) as gif:
        assert gif.size == (24, 24) and gif.n_frames == 4
        gif.seek(2)
        assert np.asarray(gif.convert("L"))[7, 7] == 255
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp file left


# -- on-disk dataset ---------------------------------------------------------------------------
def test_generate_writes_a_dataset_that_clip_dataset_reads(tmp_path):
    out = generate_temporal_shapes(tmp_path / "ts", "mnist", num=20, split="trainval", seed=3, gifs=5)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "temporal-shapes-mnist" and meta["classes"] == CLASSES
    assert (meta["fps"], meta["channels"], meta["frames"], meta["domain"]) == (10, 1, 20, "mnist")
    records = DatasetStore(out).records()
    assert [r.video_id for r in records][:2] == ["mnist_000000", "mnist_000001"]
    assert sum(r.split == "val" for r in records) == 4 and sum(r.split == "train" for r in records) == 16
    assert all(r.domain == "mnist" and r.fps == 10 and r.num_frames == 20 and r.subject == "" for r in records)
    videos, labels, _ = temporal_shapes(20, "mnist", seed=3, digit_pool="train")
    assert np.array_equal(DatasetStore(out).read_frames("mnist_000007"), videos[7])
    train = ClipDataset(out, split="train")
    sample = train[0]
    assert len(train) == 16 and sample["video"].shape == (1, 20, 64, 64)
    assert float(sample["video"].max()) <= 1.0
    index = int(sample["video_id"].split("_")[1])
    assert sample["label"] == labels[index]
    assert len(list((out / "previews").glob("*.gif"))) == 5


def test_generate_refuses_a_non_empty_directory_unless_overwrite(tmp_path):
    generate_temporal_shapes(tmp_path, "2dot", num=5, split="test", gifs=0)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_temporal_shapes(tmp_path, "2dot", num=5, split="test")
    generate_temporal_shapes(tmp_path, "5dot", num=3, split="test", overwrite=True, gifs=1)
    records = DatasetStore(tmp_path).records()
    assert len(records) == 3 and {r.split for r in records} == {"test"}
    assert len(list((tmp_path / "frames").iterdir())) == 3  # the old clips are gone
