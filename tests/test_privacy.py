"""Motion-consistent privacy obfuscation and its baselines (Ilic 2024 §5.3–5.4)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import stats

from kinetoscope.synth.privacy import (
    ColourKeyExtractor,
    ObfuscationSettings,
    TemplateLibrary,
    blend,
    blur,
    blur_kernel,
    iid_noise,
    make_obfuscated_dataset,
    make_template,
    mask_fill,
    motion_noise,
    noise_bounds,
    obfuscate,
    pixelate,
    saliency_maps,
)

HEIGHT, WIDTH, SIDE, STEP, X0, Y0 = 96, 128, 48, 2, 24, 24


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blurred = cv2.GaussianBlur(rng.random((height, width)).astype(np.float32), (0, 0), 2.0)
    return (blurred - blurred.min()) / (blurred.max() - blurred.min())


def _person_video(frames: int = 5) -> np.ndarray:
    """A red-ish textured 'person' (R high, G/B low) translating STEP px/frame to the right over a
    cyan-ish textured static background (R low, G/B high)."""
    bg = _texture(HEIGHT, WIDTH, 1)
    background = np.stack([20 + 80 * bg, 150 + 85 * bg, 150 + 85 * bg[::-1]], -1).astype(np.uint8)
    tex = _texture(SIDE, SIDE, 2)
    person = np.stack([150 + 85 * tex, 20 + 80 * tex, 20 + 80 * tex.T], -1).astype(np.uint8)
    out = []
    for t in range(frames):
        frame = background.copy()
        x = X0 + STEP * t
        frame[Y0:Y0 + SIDE, x:x + SIDE] = person
        out.append(frame)
    return np.stack(out)


def _region(t: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[Y0:Y0 + SIDE, X0 + STEP * t:X0 + STEP * t + SIDE] = True
    return mask


def _keys(video: np.ndarray, extractor) -> np.ndarray:
    template = make_template(video[0], (X0 + SIDE // 2, Y0 + SIDE // 2), "torso", extractor)
    return np.asarray([template.key], dtype=np.float32)


def _shift_between(a: np.ndarray, b: np.ndarray) -> tuple[tuple[float, float], float]:
    """((dx, dy), response) such that ``b`` is ``a`` moved by (dx, dy), by phase correlation (no taper:
    on white noise crops this small a Hanning window biases the sub-pixel peak)."""
    return cv2.phaseCorrelate(a.astype(np.float64), b.astype(np.float64))


def test_saliency_is_the_clipped_cosine_mean_over_templates():
    extractor = ColourKeyExtractor(patch=8)
    frame = np.zeros((1, 16, 16, 3), np.uint8)
    frame[0, :8, :8] = (200, 30, 30)  # key (1, -1, -1)
    frame[0, :8, 8:] = (200, 200, 30)  # key (1, 1, -1): cos with (1,-1,-1) = 1/3
    frame[0, 8:] = (30, 200, 200)  # key (-1, 1, 1): cos -1, clipped to 0
    keys = np.array([[1, -1, -1], [1, 1, -1]], np.float32)
    grid = saliency_maps(frame, keys, extractor)[0][::8, ::8]  # one pixel per cell (cell centres differ)
    cells = extractor(frame)[0]
    expected = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            c = cells[i, j] / np.linalg.norm(cells[i, j])
            cos = keys @ c / np.linalg.norm(keys, axis=1)
            expected[i, j] = np.maximum(cos, 0).mean()
    np.testing.assert_allclose(expected, [[(1 + 1 / 3) / 2, (1 / 3 + 1) / 2], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(saliency_maps(frame, keys, extractor)[0, 3, 3], expected[0, 0], atol=1e-6)
    np.testing.assert_allclose(saliency_maps(frame, keys, extractor, combine="max")[0, 3, 3], 1.0, atol=1e-6)
    assert grid.shape == (2, 2)


def test_motion_noise_obfuscation_noise_inside_bitwise_outside_and_moves_with_the_region():
    video = _person_video(5)
    extractor = ColourKeyExtractor(patch=8)
    keys = _keys(video, extractor)
    settings = ObfuscationSettings(method="motion-noise", templates=("torso",))
    mean, std = (128, 128, 128), (20, 20, 20)
    out = obfuscate(video, settings, template_keys=keys, extractor=extractor, mean=mean, std=std, seed=3)
    saliency = saliency_maps(video, keys, extractor)
    low, high = noise_bounds(mean, std, 3)
    assert list(low) == [108] * 3 and list(high) == [148] * 3
    for t in range(len(video)):
        inside = saliency[t] > 1 - 1e-6  # 1 to float precision: there O = N exactly after rounding
        outside = saliency[t] == 0.0
        assert inside.sum() > 0.4 * SIDE * SIDE and not (inside & ~_region(t)).any()
        far = ~cv2.dilate(_region(t).astype(np.uint8), np.ones((33, 33), np.uint8)).astype(bool)
        assert outside[far].all()  # everything well away from the person is outside the salient region
        np.testing.assert_array_equal(out[t][outside], video[t][outside])  # bitwise unchanged
        values = out[t][inside]
        assert values.min() >= 108 and values.max() <= 148
        if t in (0, len(video) - 1):  # per channel, the noise is uniform on 108..148
            for c in range(3):
                counts = np.bincount(values[:, c].astype(int) - 108, minlength=41)
                assert stats.chisquare(counts).pvalue > 1e-3
    # the noise moves with the person: a fixed window inside the person at t-1 and t
    for t in range(1, len(video)):
        x = X0 + STEP * t + 4  # inside the person at both t - 1 and t
        window = (slice(Y0 + 4, Y0 + SIDE - 4), slice(x, x + SIDE - 4 - STEP - 4))
        (dx, dy), response = _shift_between(out[t - 1][window][..., 0], out[t][window][..., 0])
        assert abs(dx - STEP) < 0.5 and abs(dy) < 0.5 and response > 0.3
    # the i.i.d. ablation has no such motion
    iid = obfuscate(video, ObfuscationSettings(method="iid-noise", templates=("torso",)), template_keys=keys,
                    extractor=extractor, mean=mean, std=std, seed=3)
    x = X0 + STEP * 2 + 4
    window = (slice(Y0 + 4, Y0 + SIDE - 4), slice(x, x + SIDE - 4 - STEP - 4))
    moved = iid[1][window[0], window[1].start - STEP:window[1].stop - STEP]
    assert (iid[2][window] == moved).mean() < 0.2


def test_motion_noise_is_reproducible_and_the_flow_method_is_a_parameter():
    video = _person_video(3)
    a = motion_noise(video, (128,) * 3, (30,) * 3, seed=1)
    b = motion_noise(video, (128,) * 3, (30,) * 3, seed=1)
    np.testing.assert_array_equal(a, b)
    zero = np.zeros((2, HEIGHT, WIDTH, 2), np.float32)
    still = motion_noise(video, (128,) * 3, (30,) * 3, seed=1, flow=zero)
    np.testing.assert_array_equal(still[1], still[0])  # no motion: the noise stays put
    dis = motion_noise(video, (128,) * 3, (30,) * 3, seed=1, flow_method="dis")
    assert dis.shape == video.shape
    with pytest.raises(KeyError, match="flow method"):
        motion_noise(video, (128,) * 3, (30,) * 3, flow_method="no-such-flow")


def test_one_frame_video_has_no_flow_and_is_blended_with_the_first_noise_frame():
    video = _person_video(1)
    extractor = ColourKeyExtractor(patch=8)
    keys = _keys(video, extractor)
    out = obfuscate(video, ObfuscationSettings(flow_method="no-flow-needed-for-one-frame"), template_keys=keys,
                    extractor=extractor, mean=(128,) * 3, std=(20,) * 3)
    inside = saliency_maps(video, keys, extractor)[0] > 1 - 1e-6
    assert out.shape == video.shape and out[0][inside].min() >= 108 and out[0][inside].max() <= 148
    with pytest.raises(ValueError, match="no frames"):
        obfuscate(video[:0], ObfuscationSettings(), template_keys=keys, extractor=extractor)


def test_blend_is_lerp():
    frames = np.full((1, 2, 2, 1), 100, np.uint8)
    noise = np.full((1, 2, 2, 1), 200, np.uint8)
    s = np.array([[[0.0, 0.25], [0.5, 1.0]]], np.float32)
    np.testing.assert_array_equal(blend(frames, noise, s)[0, ..., 0], [[100, 125], [150, 200]])


def test_templates_round_trip_and_bad_templates_are_refused(tmp_path):
    video = _person_video(1)
    extractor = ColourKeyExtractor(patch=8)
    library = TemplateLibrary(tmp_path / "templates.json")
    template = make_template(video[0], (X0 + 20, Y0 + 20), "torso", extractor, source="person.png")
    library.add(template)
    library.add(make_template(video[0], (2, 2), "wall", extractor, source="person.png"))
    assert library.names() == ["torso", "wall"]
    loaded = library.select(["torso"], extractor)[0]
    assert loaded == template and loaded.key == [1.0, -1.0, -1.0] and loaded.patch == (5, 5)
    with pytest.raises(KeyError, match=r"unknown template\(s\) \['face'\].*available: torso, wall"):
        library.select(["face"], extractor)
    with pytest.raises(ValueError, match="made with extractor 'colour-sign/patch8'.*'colour-sign/patch4'"):
        library.select(["torso"], ColourKeyExtractor(patch=4))
    with pytest.raises(ValueError, match="keys of length 3"):
        saliency_maps(video, np.ones((1, 384), np.float32), extractor)
    with pytest.raises(FileExistsError, match="already exists"):
        library.add(template)
    with pytest.raises(ValueError, match="outside"):
        make_template(video[0], (WIDTH, 0), "x", extractor)


def test_baselines():
    video = _person_video(2)
    # pixelate: every block is constant and equals the block mean
    pix = pixelate(video, 16)
    block = video[0, 16:32, 32:48].reshape(-1, 3).astype(float).mean(0)
    np.testing.assert_array_equal(pix[0, 16:32, 32:48], np.broadcast_to(np.rint(block), (16, 16, 3)))
    assert pixelate(video[:, :20, :20], 16)[0, 16:, 16:].std(axis=(0, 1)).max() == 0  # partial block
    # blur: the document's kernels at 224², scaled to other sizes
    assert blur_kernel("weak", 224, 224) == (13, 10.0) and blur_kernel("strong", 224, 300) == (21, 10.0)
    assert blur_kernel("weak", 112, 112) == (7, 5.0)
    flat = np.full((1, 32, 32, 3), 77, np.uint8)
    np.testing.assert_array_equal(blur(flat, "strong"), flat)
    assert blur(video, "strong").std() < video.std()
    # mask: the person becomes its mean colour, the rest is unchanged
    masks = np.stack([_region(t) for t in range(2)])
    filled = mask_fill(video, masks)
    np.testing.assert_array_equal(filled[~masks], video[~masks])
    mean = np.rint(video[0][masks[0]].astype(float).mean(0))
    np.testing.assert_array_equal(filled[0][masks[0]], np.broadcast_to(mean, (masks[0].sum(), 3)))
    # i.i.d. noise is redrawn every frame
    noise = iid_noise(video, (128,) * 3, (20,) * 3)
    assert (noise[0] == noise[1]).mean() < 0.1
    with pytest.raises(ValueError, match="pixelate block"):
        ObfuscationSettings(method="pixelate", block=8)
    with pytest.raises(ValueError, match="blur strength"):
        ObfuscationSettings(method="blur", strength="medium")
    with pytest.raises(ValueError, match="not known"):
        ObfuscationSettings(method="cartoon")


def _store(root, videos: dict[str, np.ndarray]):
    from kinetoscope.data.cache import DatasetStore
    from kinetoscope.data.index import VideoRecord

    store = DatasetStore(root)
    records = []
    for i, (vid, frames) in enumerate(videos.items()):
        store.write_frames(vid, frames)
        records.append(VideoRecord(video_id=vid, label="walk", subject=f"p{i}", split="train",
                                   num_frames=len(frames), fps=10.0))
    store.write_records(records)
    store.write_meta({"name": "people", "classes": ["walk"], "fps": 10, "size": [HEIGHT, WIDTH], "channels": 3})
    return store


def test_dataset_mask_method_records_missing_masks_and_writes_the_rest(tmp_path):
    from kinetoscope.data.cache import DatasetStore

    video = _person_video(3)
    _store(tmp_path / "src", {"a": video, "b": video, "c": video})
    masks = tmp_path / "masks"
    masks.mkdir()
    np.save(masks / "a.npy", np.stack([_region(t) for t in range(3)]))
    np.save(masks / "c.npy", np.zeros((3, 10, 10), bool))  # wrong shape
    out = make_obfuscated_dataset(tmp_path / "src", tmp_path / "out", ObfuscationSettings(method="mask"),
                                  masks_dir=masks)
    store = DatasetStore(out)
    assert [r.video_id for r in store.records()] == ["a"]
    problems = dict(store.problems())
    assert set(problems) == {"b", "c"} and "b.npy is missing" in problems["b"] and "(3, 10, 10)" in problems["c"]
    np.testing.assert_array_equal(store.read_frames("a"), mask_fill(video, np.load(masks / "a.npy")))


def test_dataset_motion_noise_resumes_and_refuses_other_settings(tmp_path):
    from kinetoscope.data.cache import DatasetStore

    video = _person_video(3)
    _store(tmp_path / "src", {"a": video, "b": video[:1]})
    extractor = ColourKeyExtractor(patch=8)
    library = tmp_path / "templates.json"
    TemplateLibrary(library).add(make_template(video[0], (X0 + 20, Y0 + 20), "torso", extractor))
    settings = ObfuscationSettings(templates=("torso",))
    done: list[str] = []
    out = make_obfuscated_dataset(tmp_path / "src", tmp_path / "out", settings, library=library, extractor=extractor,
                                  on_video=done.append)
    assert done == ["a", "b"]
    first = DatasetStore(out).read_frames("a", mmap=False)
    make_obfuscated_dataset(tmp_path / "src", tmp_path / "out", settings, library=library, extractor=extractor,
                            on_video=done.append)
    assert done == ["a", "b"]  # nothing redone
    np.testing.assert_array_equal(DatasetStore(out).read_frames("a"), first)
    assert DatasetStore(out).read_frames("b").shape == (1, HEIGHT, WIDTH, 3)
    with pytest.raises(FileExistsError, match="other data"):
        make_obfuscated_dataset(tmp_path / "src", tmp_path / "out", ObfuscationSettings(templates=("torso",), seed=1),
                                library=library, extractor=extractor)
    with pytest.raises(KeyError, match="available: torso"):
        make_obfuscated_dataset(tmp_path / "src", tmp_path / "o2", ObfuscationSettings(templates=("hair",)),
                                library=library, extractor=extractor)


def test_cli_templates_then_obfuscate(tmp_path):
    from typer.testing import CliRunner

    from kinetoscope.cli import app
    from kinetoscope.data.cache import DatasetStore

    runner = CliRunner()
    video = _person_video(3)
    _store(tmp_path / "src", {"a": video})
    image = tmp_path / "person.png"
    cv2.imwrite(str(image), cv2.cvtColor(video[0], cv2.COLOR_RGB2BGR))
    library = tmp_path / "lib.json"
    result = runner.invoke(app, ["synth", "templates", str(image), "--patch", f"{X0 + 20},{Y0 + 20}", "--name", "torso",
                                 "--library", str(library), "--extractor", "colour"])
    assert result.exit_code == 0, result.output
    assert TemplateLibrary(library).load()["torso"].key == [1.0, -1.0, -1.0]
    args = ["synth", "obfuscate", str(tmp_path / "src"), str(tmp_path / "out"), "--library", str(library),
            "--extractor", "colour"]
    result = runner.invoke(app, [*args, "--templates", "torso,face"])
    assert result.exit_code == 2 and "unknown template(s) ['face']" in result.output
    assert "available: torso" in result.output
    result = runner.invoke(app, [*args, "--templates", "torso"])
    assert result.exit_code == 0, result.output
    assert DatasetStore(tmp_path / "out").read_frames("a").shape == video.shape
    result = runner.invoke(app, ["synth", "obfuscate", str(tmp_path / "src"), str(tmp_path / "blur"), "--method",
                                 "blur", "--strength", "strong"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(DatasetStore(tmp_path / "blur").read_frames("a"), blur(video, "strong"))
    result = runner.invoke(app, ["synth", "templates", str(tmp_path / "none.png"), "--patch", "1,1", "--name", "x",
                                 "--library", str(library), "--extractor", "colour"])
    assert result.exit_code == 2 and "none.png" in result.output
