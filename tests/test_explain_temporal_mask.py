"""Temporal masks (Mänttäri 2020 §3.1, §4.3): perturbations, objective, planted signal, the two protocols."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kinetoscope.explain import apply_freeze, apply_reverse, temporal_mask
from kinetoscope.explain.temporal_mask import (
    central_masks,
    choose_central,
    drop_statistics,
    freeze_reference,
    freeze_weights,
    reverse_reference,
    temporal_mask_reference,
    total_variation,
)


def indexed_clip(frames: int = 16) -> torch.Tensor:
    """A [1, 1, T, 2, 2] clip whose frame t (0-based) has every pixel equal to t + 1."""
    values = torch.arange(1, frames + 1, dtype=torch.float32)
    return values.view(1, 1, frames, 1, 1).expand(1, 1, frames, 2, 2).clone()


def frame_order(clip: torch.Tensor) -> list[int]:
    return [int(round(v)) for v in clip[0, 0, :, 0, 0].tolist()]


def test_reverse_example_of_seed_001_reverses_each_active_run_in_place():
    mask = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0], dtype=torch.float32)
    expected = [1, 2, 3, 8, 7, 6, 5, 4, 9, 10, 11, 12, 13, 15, 14, 16]
    assert frame_order(apply_reverse(indexed_clip(), mask)) == expected
    assert frame_order(reverse_reference(indexed_clip(), mask)) == expected


def test_freeze_repeats_the_perturbed_previous_frame():
    # the seed's printed result [1,2,3,3,3,3,3,3,9,...] is what the recursion gives for frames 4-8 on
    on_4_to_8 = torch.zeros(16)
    on_4_to_8[3:8] = 1
    assert frame_order(apply_freeze(indexed_clip(), on_4_to_8)) == [1, 2, 3, 3, 3, 3, 3, 3, *range(9, 17)]
    # the printed mask (on at 4-9, 1-based) holds frame 3 through frame 9
    on_4_to_9 = torch.zeros(16)
    on_4_to_9[3:9] = 1
    assert frame_order(apply_freeze(indexed_clip(), on_4_to_9)) == [1, 2, 3, 3, 3, 3, 3, 3, 3, *range(10, 17)]
    # frame 0 is never replaced, whatever m_0 is
    assert frame_order(apply_freeze(indexed_clip(), torch.ones(16))) == [1] * 16


def test_fast_perturbations_equal_the_reference_loops():
    torch.manual_seed(0)
    clips = torch.rand(3, 2, 12, 5, 4)
    binary = (torch.rand(3, 12) > 0.5).float()
    soft = torch.rand(3, 12)
    for method in ("recurrence", "matrix"):  # bit for bit on binary masks
        assert torch.equal(apply_freeze(clips, binary, method), freeze_reference(clips, binary))
    assert torch.equal(apply_freeze(clips, soft), freeze_reference(clips, soft))
    torch.testing.assert_close(apply_freeze(clips, soft, "matrix"), freeze_reference(clips, soft))
    assert torch.equal(apply_reverse(clips, binary), reverse_reference(clips, binary))
    torch.testing.assert_close(apply_reverse(clips, soft), reverse_reference(clips, soft), rtol=0, atol=1e-6)


def test_freeze_weights_unroll_the_recurrence():
    mask = torch.tensor([[0.3, 0.5, 0.25, 1.0]])
    w = freeze_weights(mask)[0]
    # x'_2 = (1 - m_2) x_2 + m_2 (1 - m_1) x_1 + m_2 m_1 x_0  (m_0 counts as 0)
    torch.testing.assert_close(w[2], torch.tensor([0.25 * 0.5, 0.25 * 0.5, 0.75, 0.0]))
    torch.testing.assert_close(w.sum(dim=1), torch.ones(4))  # a convex combination of frames


def test_soft_reverse_blends_pairs_and_gradients_reach_the_mask():
    clip = indexed_clip(4)
    mask = torch.tensor([0.0, 0.5, 0.8, 0.05], requires_grad=True)  # one run: frames 1-2 (m > 0.1)
    out = apply_reverse(clip, mask)
    assert frame_order(out) == [1, round(0.5 * 2 + 0.5 * 3), round(0.2 * 3 + 0.8 * 2), 4]
    torch.testing.assert_close(out[0, 0, :, 0, 0], torch.tensor([1.0, 2.5, 2.2, 4.0]))
    out.sum().backward()
    assert mask.grad[1] != 0 and mask.grad[2] != 0 and mask.grad[3] == 0


def test_total_variation_is_the_code_formula():
    m = torch.tensor([[0.0, 1.0, 1.0, 0.5, 0.5]])
    # u = 1..3: (|m0-m1|^3 + |m2-m1|^3) + (|m1-m2|^3 + |m3-m2|^3) + (|m2-m3|^3 + |m4-m3|^3)
    assert total_variation(m).item() == pytest.approx(1 + 0 + 0 + 0.125 + 0.125 + 0)


def test_central_initialisation_keeps_the_last_size_meeting_90_percent():
    assert central_masks(6).tolist() == [[1] * 6, [0, 1, 1, 1, 1, 0], [0, 0, 1, 1, 0, 0]]
    assert choose_central([0.99, 0.95, 0.5, 0.97]) == 2
    assert choose_central([0.99, 0.95, 0.5, 0.97], legacy_off_by_one=True) == 3
    assert choose_central([0.2, 0.95]) == 0  # the full mask
    assert choose_central([0.99, 0.95]) == 2
    assert choose_central([math.nan]) == 0


def test_drop_ratio_filters_tiny_drops_but_difference_keeps_every_clip():
    os_, fs, rs = torch.tensor([0.9, 0.9, 0.9]), torch.tensor([0.5, 0.8995, 0.3]), torch.tensor([0.1, 0.2, 0.8999])
    ratio, difference = drop_statistics(os_, fs, rs)
    assert ratio[0].item() == pytest.approx(0.4 / 0.8)
    assert math.isnan(ratio[1]) and math.isnan(ratio[2])
    torch.testing.assert_close(difference, rs - fs)


class FramesFiveToEight(nn.Module):
    """Class 0's logit is the motion energy between frames 5..8 (1-based) and nothing else."""

    streams = ("rgb",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = x[:, :, 4:8]
        energy = (window[:, :, 1:] - window[:, :, :-1]).abs().mean(dim=(1, 2, 3, 4))
        logit = 40 * energy - 4
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def test_planted_signal_mask_concentrates_on_frames_5_to_8():
    torch.manual_seed(0)
    clips = torch.rand(3, 1, 16, 6, 6)
    model = FramesFiveToEight()
    result = temporal_mask(model, clips)
    assert result.target.tolist() == [0, 0, 0]
    assert (result.original_score > 0.99).all()
    on = result.binary_mask
    assert on[:, 5:8].all()  # frames 6-8 must be frozen to remove the motion of frames 5-8
    # TV with β = 3 prefers a ramp to a step, so the mask may spill one frame either side
    assert not on[:, :4].any() and not on[:, 9:].any()
    near = result.mask[:, 3:10].sum(dim=1) / result.mask.sum(dim=1)
    assert (near > 0.95).all()
    assert (result.freeze_score < 0.05).all()
    assert result.protocol == "paper" and (result.iterations == 300).all()  # fixed, no early stop
    assert all(row["protocol"] == "paper" and row["iterations"] == 300 for row in result.rows())


def test_early_stop_mode_finds_the_planted_frames_and_stops_on_a_flat_loss():
    torch.manual_seed(0)
    clips = torch.rand(3, 1, 16, 6, 6)
    model = FramesFiveToEight()
    early = temporal_mask(model, clips, protocol="early-stop")
    assert early.protocol == "early-stop"
    assert early.binary_mask[:, 5:8].all() and not early.binary_mask[:, :4].any()
    assert (early.freeze_score < 0.05).all()
    assert (early.iterations >= 1).all() and (early.iterations <= 300).all()
    # the stopping rule |L_k - L_{k-1}| < tolerance: a loose tolerance stops every clip after one update;
    # tolerance 0 never stops, which is the paper protocol
    loose = temporal_mask(model, clips, protocol="early-stop", tolerance=10.0)
    assert (loose.iterations == 1).all()
    never = temporal_mask(model, clips, protocol="early-stop", tolerance=0.0, iterations=20)
    paper = temporal_mask(model, clips, iterations=20)
    assert (never.iterations == 20).all() and torch.equal(never.mask, paper.mask)
    with pytest.raises(ValueError, match="protocol"):
        temporal_mask(model, clips, protocol="fast")


def test_fast_path_finds_the_reference_mask():
    torch.manual_seed(1)
    clips = torch.rand(1, 1, 16, 4, 4)
    model = FramesFiveToEight()
    reference = temporal_mask_reference(model, clips)
    # the paper protocol: the batched path's Adam is the reference's, all 300 iterations
    paper = temporal_mask(model, clips)
    assert torch.equal(paper.init_off, reference.init_off)
    assert torch.equal(paper.binary_mask, reference.binary_mask)
    torch.testing.assert_close(paper.mask, reference.mask, atol=1e-3, rtol=0)
    # early stopping leaves the ramp frames of the β = 3 TV term less settled, nothing else
    early = temporal_mask(model, clips, protocol="early-stop")
    assert torch.equal(early.binary_mask[:, 5:8], reference.binary_mask[:, 5:8])
    torch.testing.assert_close(early.mask, reference.mask, atol=0.25, rtol=0)
    torch.testing.assert_close(early.freeze_score, reference.freeze_score, atol=0.02, rtol=0)
    short = temporal_mask(model, clips, iterations=40)
    short_ref = temporal_mask_reference(model, clips, iterations=40)
    torch.testing.assert_close(short.mask, short_ref.mask, atol=1e-4, rtol=0)


def test_two_stream_mask_perturbs_only_the_chosen_stream():
    class TwoStream(nn.Module):
        streams = ("rgb", "flow")

        def __init__(self) -> None:
            super().__init__()
            self.inner = FramesFiveToEight()

        def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
            return self.inner(flow) + 0 * rgb.mean()

    torch.manual_seed(2)
    rgb, flow = torch.rand(2, 3, 16, 4, 4), torch.rand(2, 2, 16, 4, 4)
    model = TwoStream()
    on_flow = temporal_mask(model, {"rgb": rgb, "flow": flow}, stream="flow", iterations=120)
    assert on_flow.binary_mask[:, 5:8].all()
    on_rgb = temporal_mask(model, [rgb, flow], stream="rgb", iterations=30)
    assert torch.allclose(on_rgb.freeze_score, on_rgb.original_score)  # the rgb stream carries nothing


def test_model_state_is_restored():
    model = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.rand(1, 1, 6, 4, 4))
    model.train()
    temporal_mask(model, torch.rand(2, 1, 6, 4, 4), iterations=3)
    assert model.training and all(p.requires_grad for p in model.parameters())
