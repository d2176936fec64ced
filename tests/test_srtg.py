"""Squeeze and Recursion, the cycle-consistency gate and the SRTG ResNets (Stergiou 2021 §4.3, §5.3.2):
SR = a ⊙ h with h the recurrent net over pool_s(a); the thesis' GRU candidate (Eq. 5.10); the gate's open /
closed / inactive states on sequences whose consistency is known; every placement of Fig. 4.5 sees the
tensor it should; parameter counts against the thesis; one training step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.layers import SRTG, CycleConsistencyGate, SqueezeRecursion
from kinetoscope.layers.gates import ExactGRU
from kinetoscope.models import create_model
from kinetoscope.models.resnet3d import Conv2Plus1D, Conv3DSimple
from kinetoscope.models.srtg import PLACEMENTS, SRTGBasicBlock, SRTGBottleneck, SRTGResNet

# Thesis parameter counts in millions, 400 classes (Stergiou 2021 Tables 4.2 / 4.5).
REPORTED_MILLIONS = {
    "srtg_r3d_34": 83.86,
    "srtg_r3d_50": 56.90,
    "srtg_r3d_101": 107.14,
    "srtg_r2plus1d_34": 82.01,
    "srtg_r2plus1d_50": 55.04,
    "srtg_r2plus1d_101": 105.29,
}
BLOCKS = {34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("cell", "per_layer"), [("lstm", 8), ("gru", 6), ("rnn", 2)])
def test_squeeze_recursion_parameter_count(cell: str, per_layer: int) -> None:
    channels = 12
    assert count(SqueezeRecursion(channels, cell)) == 2 * (per_layer * channels**2 + per_layer * channels)


def test_squeeze_recursion_multiplies_in_the_lstm_hidden_states_of_the_spatial_means() -> None:
    torch.manual_seed(0)
    sr = SqueezeRecursion(6, "lstm")
    a = torch.randn(2, 6, 5, 3, 4)
    pooled = a.mean(dim=(3, 4)).transpose(1, 2)  # [B, T, C]
    hidden, _ = sr.recurrent(pooled)
    expected = a * hidden.transpose(1, 2)[..., None, None]
    torch.testing.assert_close(sr(a), expected)


def test_exact_gru_applies_the_reset_gate_before_the_hidden_matmul() -> None:
    """Eqs. 5.8-5.11 step by step, with nn.GRU's parameters; nn.GRU itself differs (reset after matmul)."""
    torch.manual_seed(1)
    exact = ExactGRU(4, 4, num_layers=1)
    x = torch.randn(3, 5, 4)
    w_ih, w_hh, b_ih, b_hh = exact.weight_ih_l0, exact.weight_hh_l0, exact.bias_ih_l0, exact.bias_hh_l0
    (wr, wz, wn), (ur, uz, un) = w_ih.chunk(3), w_hh.chunk(3)
    (br, bz, bn), (cr, cz, cn) = b_ih.chunk(3), b_hh.chunk(3)
    h = torch.zeros(3, 4)
    steps = []
    for t in range(5):
        xt = x[:, t]
        z = torch.sigmoid(xt @ wz.T + bz + h @ uz.T + cz)  # Eq. 5.8
        r = torch.sigmoid(xt @ wr.T + br + h @ ur.T + cr)  # Eq. 5.9
        candidate = torch.tanh(xt @ wn.T + bn + (r * h) @ un.T + cn)  # Eq. 5.10
        h = z * h + (1 - z) * candidate  # Eq. 5.11
        steps.append(h)
    torch.testing.assert_close(exact(x), torch.stack(steps, 1))
    fast = nn.GRU(4, 4, batch_first=True)
    fast.load_state_dict(exact.state_dict())
    assert not torch.allclose(fast(x)[0], exact(x), atol=1e-4)


def distinct_sequence(batch: int = 2, length: int = 5, channels: int = 3) -> torch.Tensor:
    """Frames far apart (distance >> 1), so Eq. 4.6's softmax is sharp: ``[B, T, C]``."""
    torch.manual_seed(2)
    return torch.randn(batch, length, channels) * 10


def test_gate_opens_for_consistent_sequences_and_closes_otherwise() -> None:
    gate = CycleConsistencyGate()
    a = distinct_sequence()
    assert gate(a, a + 0.01).tolist() == [True, True]  # nearest neighbours map each frame to itself
    assert gate(a, a.flip(1)).tolist() == [False, False]  # reversed: A_t's neighbour is B_{T-1-t}
    mixed = torch.stack([a[0], a[1].roll(1, dims=0)])
    assert gate(a, mixed).tolist() == [True, False]  # decided per sample


def test_gate_temperature_blurs_the_soft_nearest_neighbour() -> None:
    """Three equally spaced frames on a line: a sharp softmax maps each to itself; a very soft one averages
    all frames, whose nearest frame is the middle one, so the ends are no longer consistent."""
    line = torch.tensor([[[0.0], [10.0], [20.0]]])
    assert CycleConsistencyGate(temperature=1.0)(line, line).item()
    assert not CycleConsistencyGate(temperature=1e6)(line, line).item()


def test_srtg_states_open_closed_and_inactive() -> None:
    torch.manual_seed(3)
    a = torch.randn(2, 3, 5, 2, 2) + 5 * torch.arange(5.0).view(1, 1, 5, 1, 1)  # distinct frames
    pooled = a.mean(dim=(3, 4)).transpose(1, 2)
    for gate, hidden, expect_open in [
        (True, lambda p: p + 0.01, True),  # consistent -> open -> a ⊙ h
        (True, lambda p: p.flip(1), False),  # inconsistent -> closed -> a
        (False, lambda p: p.flip(1), True),  # inactive -> always a ⊙ h
    ]:
        module = SRTG(3, gate=gate)
        module.sr.hidden_states = hidden
        out = module(a)
        h = hidden(pooled).transpose(1, 2)[..., None, None]
        assert module.last_open.tolist() == [expect_open] * 2
        torch.testing.assert_close(out, a * h if expect_open else a)


class Probe(nn.Module):
    """Stands in for a block's SRTG: records its input, returns it unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return x


def expected_input(block: nn.Module, x: torch.Tensor, placement: str) -> torch.Tensor:
    """The tensor Fig. 4.5's ``placement`` applies SRTG to, recomputed from the block's own layers."""
    shortcut = x if block.downsample is None else block.downsample(x)
    if placement == "start":
        return x
    if placement == "res":
        return shortcut
    out = block.relu(block.bn1(block.conv1(x)))
    if placement == "top":
        return out
    if isinstance(block, SRTGBasicBlock):
        if placement == "mid":
            return out
        return block.relu(block.bn2(block.conv2(out)) + shortcut)
    out = block.relu(block.bn2(block.conv2(out)))
    if placement == "mid":
        return out
    out = block.bn3(block.conv3(out))
    return out if placement == "end" else block.relu(out + shortcut)


@pytest.mark.parametrize("bottleneck", [False, True])
@pytest.mark.parametrize("placement", PLACEMENTS)
def test_each_placement_applies_srtg_where_figure_4_5_puts_it(placement: str, bottleneck: bool) -> None:
    block_class = SRTGBottleneck if bottleneck else SRTGBasicBlock
    downsample = nn.Sequential(nn.Conv3d(4, 6, 1, stride=2, bias=False), nn.BatchNorm3d(6))
    if not bottleneck and placement in ("top", "end"):
        with pytest.raises(ValueError, match="bottleneck"):
            block_class(4, 6, Conv3DSimple, 2, downsample, placement=placement)
        return
    torch.manual_seed(4)
    block = block_class(4, 6, Conv3DSimple, 2, downsample, placement=placement).eval()
    expected_width = 4 if placement == "start" else 6
    assert block.srtg.sr.channels == expected_width
    block.srtg = Probe()
    x = torch.randn(2, 4, 4, 6, 6)
    with torch.no_grad():
        block(x)
        torch.testing.assert_close(block.srtg.seen, expected_input(block, x, placement))


@pytest.mark.parametrize("name", sorted(REPORTED_MILLIONS))
def test_parameter_counts_match_the_thesis(name: str) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=400)
        plain = create_model(name.removeprefix("srtg_"), num_classes=400)
    depth = int(name.rsplit("_", 1)[1])
    lstm = sum(n * 2 * (8 * c * c + 8 * c) for n, c in zip(BLOCKS[depth], (64, 128, 256, 512), strict=True))
    assert count(model) - count(plain) == lstm  # one two-layer LSTM per block, hidden = stage width
    assert count(model) / 1e6 == pytest.approx(REPORTED_MILLIONS[name], abs=0.01)


def test_placement_is_an_option_and_validated() -> None:
    with torch.device("meta"):
        model = create_model("srtg_r2plus1d_50", num_classes=5, placement="end")
    assert model.placement == "end" and model.layer1[0].placement == "end"
    assert isinstance(model.layer1[0].conv2, Conv2Plus1D)
    with pytest.raises(ValueError, match="placement"):
        create_model("srtg_r3d_34", num_classes=5, placement="top")


@pytest.mark.parametrize(("family", "depth", "placement"), [("r3d", 34, "final"), ("r2plus1d", 50, "end")])
def test_srtg_resnet_trains_for_a_step(family: str, depth: int, placement: str) -> None:
    """The registered layout at 1/8 width (the full-width forward/backward runs in test_models_smoke)."""
    torch.manual_seed(5)
    model = SRTGResNet(family, depth, num_classes=3, placement=placement, widths=(8, 16, 32, 64))
    assert model.streams == ("rgb",) and model.per_frame is False
    model.get_submodule(model.explain_layer)
    clips, labels = torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 2])
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.fc.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(clips), labels)
    loss.backward()
    optimiser.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.fc.weight)
    assert 0.0 <= model.open_fraction() <= 1.0
    lstm = model.layer1[0].srtg.sr.recurrent
    assert all(p.grad is not None for p in lstm.parameters())
