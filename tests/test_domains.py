"""Shape/texture domains S1, S2, T (Broomé 2022 §5.4) on generated clips with known masks."""

from __future__ import annotations

import numpy as np
import pytest

from kinetoscope.synth.domains import (
    IMAGENET_MEAN_PIXEL,
    blur_frames,
    boxes_from_masks,
    make_domain_datasets,
    shape_texture_domains,
)


def _clip(frames: int = 3, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random RGB clip (sharp noise, so blurring changes every pixel) and a diamond-shaped actor
    mask that moves 2 px right per frame."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size]
    masks = np.stack([np.abs(ys - 14) + np.abs(xs - (10 + 2 * t)) <= 5 for t in range(frames)])
    return video, masks


def test_boxes_from_masks_are_tight():
    _, masks = _clip()
    assert boxes_from_masks(masks)[0] == [(5, 9, 16, 20)]
    assert boxes_from_masks(np.zeros((1, 4, 4), bool)) == [[]]


def test_s1_keeps_the_actor_and_blurs_everything_else():
    video, masks = _clip()
    s1 = shape_texture_domains(video, masks)["S1"]
    blurred = blur_frames(video)
    inside = masks[..., None].repeat(3, -1)
    np.testing.assert_array_equal(s1[inside], video[inside])
    np.testing.assert_array_equal(s1[~inside], blurred[~inside])
    assert (s1[~inside] != video[~inside]).mean() > 0.9  # the background really changed
    assert s1[~inside].std() < 0.3 * video[~inside].std()  # and lost its fine texture


def test_s2_keeps_the_whole_box_and_t_fills_it_with_the_mean_pixel():
    video, masks = _clip()
    domains = shape_texture_domains(video, masks)
    box = np.zeros_like(masks)
    for t, [(x0, y0, x1, y1)] in enumerate(boxes_from_masks(masks)):
        box[t, y0:y1, x0:x1] = True
    inside = box[..., None].repeat(3, -1)
    np.testing.assert_array_equal(domains["S2"][inside], video[inside])  # box corners too, not only the mask
    np.testing.assert_array_equal(domains["S2"][~inside], blur_frames(video)[~inside])
    assert (domains["T"][box] == np.asarray(IMAGENET_MEAN_PIXEL, np.uint8)).all()
    np.testing.assert_array_equal(domains["T"][~inside], video[~inside])  # background kept as is
    clip_fill = shape_texture_domains(video, masks, fill="clip")["T"]
    np.testing.assert_array_equal(clip_fill[box][0], np.rint(video.reshape(-1, 3).mean(0)).astype(np.uint8))


def test_boxes_only_give_s2_and_t_and_missing_actors_leave_t_unchanged():
    video, _ = _clip()
    domains = shape_texture_domains(video, boxes=[[(2, 2, 6, 6)], [], [(0, 0, 4, 4), (28, 28, 40, 40)]])
    assert set(domains) == {"S2", "T"}
    np.testing.assert_array_equal(domains["T"][1], video[1])
    assert (domains["T"][2, 28:, 28:] == IMAGENET_MEAN_PIXEL).all()  # box clipped to the frame


def test_domain_datasets_from_masks_and_boxes(tmp_path):
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord

    store = DatasetStore(tmp_path / "src")
    masks_dir = tmp_path / "masks"
    masks_dir.mkdir()
    for i in range(2):
        video, masks = _clip(seed=i)
        store.write_frames(f"v{i}", video)
        np.save(masks_dir / f"v{i}.npy", masks)
    store.write_records([VideoRecord(video_id=f"v{i}", label="a", split="val") for i in range(2)])
    store.write_meta({"name": "toy", "classes": ["a"], "channels": 3, "frames": 3, "size": [32, 32]})
    roots = make_domain_datasets(store.root, tmp_path / "domains", masks_dir=masks_dir)
    assert set(roots) == {"S1", "S2", "T"}
    video, masks = _clip(seed=1)
    expected = shape_texture_domains(video, masks)
    for domain, root in roots.items():
        np.testing.assert_array_equal(DatasetStore(root).read_frames("v1"), expected[domain])
        assert DatasetStore(root).meta()["domain"] == domain
    np.save(masks_dir / "v0.npy", np.zeros((3, 16, 16), bool))  # a mask of another resolution
    with pytest.raises(ValueError, match=r"v0\.npy is \(3, 16, 16\); video 'v0' needs \[T, H, W\] = \(3, 32, 32\)"):
        make_domain_datasets(store.root, tmp_path / "wrong", masks_dir=masks_dir)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("video_id,frame,x0,y0,x1,y1\nv0,0,2,2,6,6\n")
    with pytest.raises(ValueError, match="S1"):
        make_domain_datasets(store.root, tmp_path / "b", boxes_csv=boxes)
    only = make_domain_datasets(store.root, tmp_path / "b", boxes_csv=boxes, domains=("S2", "T"))
    t_frames = DatasetStore(only["T"]).read_frames("v0")
    assert (t_frames[0, 2:6, 2:6] == IMAGENET_MEAN_PIXEL).all() and (t_frames[1] == _clip(seed=0)[0][1]).all()


def test_ratio_table_marks_a_low_t_over_v_without_t_over_s1_below_one():
    from kinetoscope.report.suites import domain_ratio_rows

    rows = domain_ratio_rows({
        "a": {"V": 0.5, "S1": 0.10, "S2": 0.12, "T": 0.08},  # lowest T/V but T/S1 = 0.8 < 1: meaningful
        "b": {"V": 0.5, "S1": 0.10, "S2": 0.10, "T": 0.12},
    })
    a, b = rows
    assert a["S1/V"] == pytest.approx(0.2) and a["T/V"] == pytest.approx(0.16) and a["T/S1"] == pytest.approx(0.8)
    assert not a["star"] and not b["star"]
    rows = domain_ratio_rows({
        "a": {"V": 0.5, "S1": 0.05, "S2": 0.1, "T": 0.07},  # lowest T/V, but T/S1 = 1.4: marked
        "b": {"V": 0.5, "S1": 0.2, "S2": 0.2, "T": 0.1},
    })
    assert rows[0]["star"] and not rows[1]["star"]
