"""Triplet-cosine frame selection (Stergiou 2021 §5.3.1, Eqs. 5.6-5.7): scores on a hand-made sequence, keeping
the least redundant frames of a constructed clip, selecting (exact copies) not blending, temporal order."""

from __future__ import annotations

import pytest
import torch

from kinetoscope.layers import select_frames, triplet_cosine_scores
from kinetoscope.layers.frame_select import TripletCosineSelect


def clip_from_frame_vectors(vectors: torch.Tensor, size: int = 4, seed: int = 0) -> torch.Tensor:
    """``[T, C]`` frame vectors -> ``[1, C, T, size, size]`` whose spatial means are exactly the vectors
    (a zero-mean +-noise checkerboard per frame and channel on top, so pooling matters)."""
    generator = torch.Generator().manual_seed(seed)
    length, channels = vectors.shape
    noise = torch.rand(channels, length, 1, 1, generator=generator) * 5
    sign = torch.ones(size, size)
    sign[::2, 1::2] = -1
    sign[1::2, ::2] = -1
    clip = vectors.T[:, :, None, None] + noise * sign
    return clip.unsqueeze(0)


def test_scores_sum_both_neighbour_cosines_and_double_the_ends() -> None:
    vectors = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = [1.0, 0.0, 2**-0.5]  # cos(d0,d1), cos(d1,d2), cos(d2,d3)
    expected = torch.tensor([[2 * s[0], s[0] + s[1], s[1] + s[2], 2 * s[2]]])
    torch.testing.assert_close(triplet_cosine_scores(clip_from_frame_vectors(vectors)), expected)


def test_keeps_the_informative_frames_of_a_constructed_clip() -> None:
    """A static clip (one repeated frame) with two unique events at t = 2 and t = 5 (orthogonal to the
    background and to each other). Scores: P = [2, 1, 0, 1, 1, 0, 1, 2] -> the two events (0) are kept,
    then the lowest-index ties (1, 3); the static end frames (2) are dropped."""
    background = torch.tensor([1.0, 0.0, 0.0, 0.0])
    vectors = background.repeat(8, 1)
    vectors[2] = torch.tensor([0.0, 1.0, 0.0, 0.0])
    vectors[5] = torch.tensor([0.0, 0.0, 1.0, 0.0])
    clip = clip_from_frame_vectors(vectors)
    torch.testing.assert_close(triplet_cosine_scores(clip), torch.tensor([[2.0, 1, 0, 1, 1, 0, 1, 2]]))
    frames, indices = select_frames(clip)
    assert indices.tolist() == [[1, 2, 3, 5]]
    assert frames.shape == (1, 4, 4, 4, 4)
    assert torch.equal(frames, clip[:, :, [1, 2, 3, 5]])  # selected, not blended


def test_selects_per_sample_in_temporal_order() -> None:
    torch.manual_seed(0)
    clips = torch.randn(3, 5, 9, 2, 2)
    frames, indices = select_frames(clips)
    assert indices.shape == (3, 4)  # floor(9 / 2)
    assert (indices[:, 1:] > indices[:, :-1]).all()
    scores = triplet_cosine_scores(clips)
    for b in range(3):
        assert torch.equal(frames[b], clips[b][:, indices[b]])
        kept = scores[b, indices[b]]
        dropped = scores[b, [t for t in range(9) if t not in indices[b].tolist()]]
        assert kept.max() <= dropped.min()  # the lowest scores are kept


def test_short_clips_and_gradient() -> None:
    single = torch.randn(2, 3, 1, 2, 2)
    frames, indices = select_frames(single)
    assert torch.equal(frames, single) and indices.tolist() == [[0], [0]]
    x = torch.randn(1, 3, 6, 2, 2, requires_grad=True)
    frames, indices = select_frames(x)
    frames.sum().backward()
    per_frame = x.grad.sum(dim=(0, 1, 3, 4))
    assert set(per_frame.nonzero().flatten().tolist()) == set(indices[0].tolist())
    with pytest.raises(ValueError, match="keep"):
        select_frames(x, keep=7)


def test_module_records_its_last_selection() -> None:
    module = TripletCosineSelect()
    x = torch.randn(2, 3, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    out = module(x)
    assert out.shape == (2, 3, 2, 2, 2) and module.last_indices.shape == (2, 2)
    for b in range(2):  # the recorded indices are the frames the output holds, as select_frames picks them
        assert torch.equal(out[b], x[b][:, module.last_indices[b]])
    _, expected = select_frames(x)
    assert torch.equal(module.last_indices, expected)
    second = module(x.flip(2))  # a new call replaces the record
    for b in range(2):
        assert torch.equal(second[b], x.flip(2)[b][:, module.last_indices[b]])
