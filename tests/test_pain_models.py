"""ConvLSTM-1 / ConvLSTM-2 of Broomé 2022 §3.2: parameter counts, shapes, fusion, frame votes, losses."""

from __future__ import annotations

import pytest
import torch

from kinetoscope.models import create_model
from kinetoscope.models.pain import clip_scores, keras_param_count, vote_over_frames


def test_convlstm1_has_731522_keras_counted_parameters_at_128_with_2_classes() -> None:
    model = create_model("convlstm1", 2)
    assert keras_param_count(model) == 731_522
    # = 112,128 + 3 x 204,928 ConvLSTM (one bias per gate) + 4 x 128 BN (incl. moving stats) + 4,098 dense
    assert sum(p.numel() for p in model.parameters()) == 731_522 - 4 * 2 * 32


def test_convlstm2_has_1458946_keras_counted_parameters() -> None:
    for fusion in ("add", "mult"):
        assert keras_param_count(create_model("convlstm2", 2, fusion=fusion)) == 1_458_946


def test_per_frame_outputs_and_clip_head_shapes() -> None:
    x = torch.rand(2, 3, 6, 32, 32)
    frame = create_model("convlstm1", 2, hidden=4, blocks=2, input_size=32, frames=6)
    assert frame.per_frame and frame(x).shape == (2, 6, 2)
    clip = create_model("convlstm1", 2, hidden=4, blocks=2, input_size=32, frames=6, head="clip")
    assert not clip.per_frame and clip(x).shape == (2, 2)
    two = create_model("convlstm2", 3, hidden=4, blocks=2, input_size=32, frames=6)
    assert two.streams == ("rgb", "flow")
    assert two(x, torch.rand(2, 3, 6, 32, 32)).shape == (2, 6, 3)


def test_time_distributed_head_shares_weights_so_frame_t_depends_only_on_steps_up_to_t() -> None:
    torch.manual_seed(0)
    model = create_model("convlstm1", 2, hidden=4, blocks=2, input_size=16, frames=5).eval()
    x = torch.rand(1, 3, 5, 16, 16)
    y = x.clone()
    y[:, :, 3:] = torch.rand(1, 3, 2, 16, 16)  # change only the last two frames
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :3], b[:, :3])  # causal recurrence + per-step dense
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_fusion_add_and_mult_combine_the_two_trunks_elementwise() -> None:
    torch.manual_seed(0)
    model = create_model("convlstm2", 2, hidden=4, blocks=1, input_size=8, frames=3, dropout=0.0).eval()
    rgb, flow = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 3, 8, 8)
    a, b = model.rgb(rgb), model.flow(flow)
    torch.testing.assert_close(model(rgb, flow), model.head(a + b))
    model.fusion = "mult"
    torch.testing.assert_close(model(rgb, flow), model.head(a * b))


def test_two_channel_flow_gets_its_magnitude_as_third_channel() -> None:
    torch.manual_seed(0)
    model = create_model("convlstm2", 2, hidden=4, blocks=1, input_size=8, frames=3).eval()
    rgb, uv = torch.rand(1, 3, 3, 8, 8), torch.randn(1, 2, 3, 8, 8)
    uvm = torch.cat([uv, uv.norm(dim=1, keepdim=True)], dim=1)
    torch.testing.assert_close(model(rgb, uv), model(rgb, uvm))


def test_wrong_input_size_names_the_option() -> None:
    model = create_model("convlstm1", 2, hidden=4, blocks=2, input_size=32)
    with pytest.raises(ValueError, match="model.input_size"):
        model(torch.rand(1, 3, 4, 64, 64))


def _frame_logits(votes: list[list[int]], k: int = 2) -> torch.Tensor:
    """Per-frame logits whose argmax is the given class per frame."""
    return torch.nn.functional.one_hot(torch.tensor(votes), k).float() * 3.0


def test_majority_vote_over_frames_on_a_hand_made_table() -> None:
    logits = _frame_logits([[1, 1, 1, 0, 0], [0, 0, 0, 0, 1], [1, 0, 1, 0, 1]])
    scores = vote_over_frames(logits, seed=0)
    assert scores.argmax(1).tolist() == [1, 0, 1]
    # shares 3/5, 4/5, 3/5 plus half a vote for the winner, renormalised over 5.5 votes
    torch.testing.assert_close(scores[:, 1], torch.tensor([3.5 / 5.5, 1 / 5.5, 3.5 / 5.5]))
    torch.testing.assert_close(scores.sum(1), torch.ones(3))


def test_vote_ties_are_broken_at_random_and_reproducibly_by_seed() -> None:
    tied = _frame_logits([[0, 1, 0, 1]] * 200)
    winners = vote_over_frames(tied, seed=3).argmax(1)
    assert 60 < int(winners.sum()) < 140  # both classes win about half the ties
    assert torch.equal(winners, vote_over_frames(tied, seed=3).argmax(1))
    assert not torch.equal(winners, vote_over_frames(tied, seed=4).argmax(1))


def test_mean_frame_aggregation_averages_the_frame_softmax() -> None:
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    expected = torch.softmax(logits, -1).mean(1)
    torch.testing.assert_close(clip_scores(logits, "mean"), expected)
    with pytest.raises(ValueError, match="vote' or 'mean"):
        clip_scores(logits, "median")


def test_bce_loss_on_one_hot_targets_per_frame() -> None:
    from kinetoscope.config import OptimConfig
    from kinetoscope.train.module import VideoClassifier

    model = create_model("convlstm1", 2, hidden=2, blocks=1, input_size=8, frames=3)
    module = VideoClassifier(model, 2, OptimConfig(), loss="bce")
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[[0.0, 1.0]] * 3])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(module._loss(logits, torch.tensor([1])), expected)


def test_convlstm1_on_the_flow_stream_takes_flow_and_keeps_the_parameter_count() -> None:
    from kinetoscope.models.inference import model_inputs

    model = create_model("convlstm1", 2, stream="flow")
    assert model.streams == ("flow",) and keras_param_count(model) == 731_522
    small = create_model("convlstm1", 2, hidden=2, blocks=1, input_size=8, frames=3, stream="flow").eval()
    flow = torch.randn(1, 2, 3, 8, 8)
    (x,) = model_inputs(small, {"video": torch.rand(1, 3, 3, 8, 8), "flow": flow})
    assert x is flow and small(x).shape == (1, 3, 2)
