"""Clip augmentations: one draw per clip, identical on every frame, aligned with the flow."""

from __future__ import annotations

import torch

from kinetoscope.config import DataConfig
from kinetoscope.data.datamodule import clip_transform
from kinetoscope.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianShading,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)


def train_transforms(size: int):
    return clip_transform(DataConfig(root=".", size=size, augment=True, shading=0.05), train=True, channels=3)


def eval_transforms(size: int):
    return clip_transform(DataConfig(root=".", size=size, augment=True), train=False, channels=3)


def static_clip(t: int = 6, h: int = 32, w: int = 40) -> torch.Tensor:
    """The same random frame repeated: any per-frame difference after a transform is a bug."""
    frame = torch.rand(3, 1, h, w, generator=torch.Generator().manual_seed(0))
    return frame.expand(3, t, h, w).contiguous()


def test_flip_mirrors_frames_and_negates_horizontal_flow() -> None:
    video = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4) / 24
    flow = torch.stack([torch.full((2, 3, 4), 1.5), torch.full((2, 3, 4), -0.5)])
    flow[0, :, :, 0] = 3.0
    out, out_flow = RandomHorizontalFlip(p=1.0)(video, flow)
    assert torch.equal(out, video.flip(-1))
    assert torch.all(out_flow[0, :, :, -1] == -3.0) and torch.all(out_flow[0, :, :, 0] == -1.5)
    assert torch.all(out_flow[1] == -0.5)  # v unchanged


def test_every_transform_is_identical_across_frames() -> None:
    video = static_clip()
    transform = train_transforms(24)
    for seed in range(5):
        out, _ = transform(video, None, torch.Generator().manual_seed(seed))
        assert out.shape == (3, 6, 24, 24)
        assert torch.allclose(out, out[:, :1].expand_as(out))


def test_shading_adds_one_noise_field_to_all_frames() -> None:
    video = torch.full((3, 4, 8, 8), 0.5)
    out, _ = GaussianShading(std=0.1, p=1.0)(video, None, torch.Generator().manual_seed(1))
    noise = out - video
    assert noise.abs().sum() > 0 and torch.allclose(noise, noise[:, :1].expand_as(noise))


def test_same_generator_seed_gives_the_same_clip() -> None:
    video = torch.rand(3, 4, 30, 30)
    t = train_transforms(16)
    a, _ = t(video, None, torch.Generator().manual_seed(7))
    b, _ = t(video, None, torch.Generator().manual_seed(7))
    c, _ = t(video, None, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_moves_flow_with_the_frames_and_rescales_vectors() -> None:
    video = torch.rand(3, 2, 40, 40)
    flow = torch.ones(2, 2, 40, 40)
    crop = RandomResizedCrop(20, scale=(0.25, 0.25), ratio=(1.0, 1.0))  # a 20x20 crop resized to 20
    _, same = crop(video, flow, torch.Generator().manual_seed(0))
    assert torch.allclose(same, torch.ones_like(same))
    crop = RandomResizedCrop(40, scale=(0.25, 0.25), ratio=(1.0, 1.0))  # a 20x20 crop upsampled x2
    _, doubled = crop(video, flow, torch.Generator().manual_seed(0))
    assert torch.allclose(doubled, torch.full_like(doubled, 2.0), atol=1e-5)


def test_colour_jitter_keeps_range_and_leaves_flow_alone() -> None:
    video, flow = torch.rand(3, 3, 8, 8), torch.randn(2, 3, 8, 8)
    out, out_flow = ColorJitter(0.4, 0.4, 0.4, 0.1)(video, flow, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1 and out_flow is flow and not torch.equal(out, video)


def test_eval_view_is_deterministic_centre() -> None:
    video = torch.rand(3, 2, 30, 50)
    out, _ = eval_transforms(20)(video)
    again, _ = eval_transforms(20)(video, None, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    assert out.shape == (3, 2, 20, 20)
    assert torch.equal(Compose([CenterCrop(10)])(video)[0], video[..., 10:20, 20:30])


def test_resize_shorter_side_matches_data_prepare_and_scales_flow_vectors() -> None:
    from kinetoscope.data.video import output_size

    video, flow = torch.rand(3, 2, 30, 45), torch.ones(2, 2, 30, 45)
    out, out_flow = Resize(20)(video, flow)
    assert tuple(out.shape[-2:]) == output_size(30, 45, 20) == (20, 30)
    assert torch.allclose(out_flow, torch.full_like(out_flow, 20 / 30), atol=1e-5)  # vectors shrink with the frame
    exact, _ = Resize((10, 12))(video)
    assert exact.shape == (3, 2, 10, 12)


def test_flow_minmax_is_the_documented_jpeg_round_trip() -> None:
    from kinetoscope.data.transforms import FlowMinMax
    from kinetoscope.flow.encode import minmax_uint8, unit_range

    flow = torch.randn(3, 5, 12, 10, generator=torch.Generator().manual_seed(0)) * 4
    flow[:, 2] = 1.5  # a constant frame becomes 0
    _, out = FlowMinMax()(torch.zeros(3, 5, 12, 10), flow)
    expected = unit_range(minmax_uint8(flow.permute(1, 2, 3, 0).numpy()))  # [T, H, W, C] per frame
    assert torch.equal(out, torch.from_numpy(expected).permute(3, 0, 1, 2))
    assert torch.all(out[:, 2] == 0) and out.min() == 0 and out.max() == 1


def test_normalize_recipes_standardise_each_channel() -> None:
    import pytest

    from kinetoscope.data.transforms import NORMALIZATIONS

    video = torch.rand(3, 2, 8, 8)
    transform = clip_transform(DataConfig(root=".", normalize="kinetics"), train=False, channels=3)
    out, _ = transform(video)
    mean, std = NORMALIZATIONS["kinetics"]
    for c in range(3):
        assert torch.allclose(out[c], (video[c] - mean[c]) / std[c], atol=1e-6)
    grey = clip_transform(DataConfig(root=".", normalize="imagenet"), train=False, channels=1)
    out, _ = grey(video[:1])
    assert torch.allclose(out, (video[:1] - sum(NORMALIZATIONS["imagenet"][0]) / 3) /
                          (sum(NORMALIZATIONS["imagenet"][1]) / 3), atol=1e-6)
    with pytest.raises(ValueError, match="2 mean/std values for 3-channel"):
        clip_transform(DataConfig(root=".", normalize=([0.5, 0.5], [0.2, 0.2])), train=False, channels=3)
    with pytest.raises(ValueError, match="one value per channel"):
        DataConfig(root=".", normalize=([0.5, 0.5], [0.2]))
    assert clip_transform(DataConfig(root="."), train=False, channels=3) is None  # auto unresolved = none


def test_augment_without_a_size_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="data.size"):
        clip_transform(DataConfig(root=".", augment=True), train=True, channels=3)


def test_colour_jitter_is_the_sequential_definition_in_one_pass() -> None:
    """Brightness, then contrast about the mean grey, then saturation about each pixel's grey, then
    clamping — and with the normalisation folded in, the same as Normalize afterwards."""
    from kinetoscope.data.transforms import Normalize

    video = torch.rand(3, 4, 6, 6, generator=torch.Generator().manual_seed(2))
    jitter = ColorJitter(0.3, 0.3, 0.3, 0.0)
    out, _ = jitter(video, None, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    b, c, s = (float(1 - 0.3 + 0.6 * torch.rand((), generator=g)) for _ in range(3))
    grey = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1, 1)
    x = video * b
    x = (x - (x * grey).sum(0).mean()) * c + (x * grey).sum(0).mean()
    x = (x - (x * grey).sum(0, keepdim=True)) * s + (x * grey).sum(0, keepdim=True)
    assert torch.allclose(out, x.clamp(0, 1), atol=1e-5)
    stats = ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])
    fused, _ = ColorJitter(0.3, 0.3, 0.3, 0.0, then_normalize=stats)(video, None, torch.Generator().manual_seed(5))
    assert torch.allclose(fused, Normalize(*stats)(out)[0], atol=1e-5)


def test_colour_jitter_on_cached_uint8_equals_it_on_float() -> None:
    video = torch.randint(0, 256, (3, 4, 6, 6), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    jitter = ColorJitter(0.3, 0.3, 0.3, 0.05)
    a, _ = jitter(video, None, torch.Generator().manual_seed(1))
    b, _ = jitter(video.float() / 255, None, torch.Generator().manual_seed(1))
    assert a.dtype == torch.float32 and torch.allclose(a, b, atol=1e-5)
