"""Grad-CAM for video (Mänttäri 2020 Eq. 2): per-timestep weights, planted region, ConvLSTM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.explain import gradcam
from kinetoscope.explain.gradcam import gradcam_maps, normalise_maps, upsample_maps
from kinetoscope.models import create_model


class RegionGate(nn.Module):
    """Keeps channel 0 inside rows/cols [lo, hi) of the feature map, zeroes it elsewhere; other
    channels pass unchanged (a hard spatial attention on one channel)."""

    def __init__(self, lo: int, hi: int) -> None:
        super().__init__()
        self.lo, self.hi = lo, hi

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.ones_like(x)
        gate[:, 0] = 0
        gate[:, 0, :, self.lo:self.hi, self.lo:self.hi] = 1
        return x * gate


class TopLeftDetector(nn.Module):
    """A 3D CNN whose class-1 logit is the brightness it sees in the top-left quarter only.

    features (the explained layer): conv (2 channels that both respond to brightness) -> ReLU ->
    max-pool 2 -> channel 0 gated to the top-left 4x4 of the 8x8 map. Channel 1 fires on every bright
    square but the head ignores it, so its Grad-CAM weight is 0.
    """

    streams = ("rgb",)
    explain_layer = "features"

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv3d(1, 2, 1)
        with torch.no_grad():
            conv.weight.fill_(1.0)
            conv.bias.zero_()
        self.features = nn.Sequential(conv, nn.ReLU(), nn.MaxPool3d((1, 2, 2)), RegionGate(0, 4))
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def test_gradcam_peaks_in_the_region_the_decision_depends_on():
    torch.manual_seed(0)
    clips = torch.zeros(2, 1, 4, 16, 16)
    clips[:, :, :, 2:6, 2:6] = 1.0  # a bright square the model reads (top-left)
    clips[:, :, :, 10:14, 10:14] = 1.0  # an identical square it ignores (bottom-right)
    maps = gradcam(TopLeftDetector(), clips, target=1, normalise="sequence")
    assert maps.shape == (2, 4, 16, 16)
    top_left, bottom_right = maps[..., :8, :8], maps[..., 8:, 8:]
    assert top_left.amax() == pytest.approx(1.0)
    assert bottom_right.amax() < 0.05
    peak = maps[0, 0].flatten().argmax()
    row, col = divmod(int(peak), 16)
    assert 1 <= row <= 6 and 1 <= col <= 6  # the peak sits on the square the model reads


def test_weights_are_per_time_step():
    """Eq. 2: w_kt averages the gradient over space only; pooling over time changes the map."""
    torch.manual_seed(0)

    class TimeWeighted(nn.Module):
        streams = ("rgb",)
        explain_layer = "conv"

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv3d(1, 1, 1, bias=False)
            nn.init.ones_(self.conv.weight)

        def forward(self, x):
            a = self.conv(x)  # [B, 1, T, H, W]
            w = torch.tensor([1.0, -1.0, 2.0]).view(1, 1, 3, 1, 1)
            return torch.stack([(a * w).mean(dim=(1, 2, 3, 4)), torch.zeros(x.shape[0])], dim=1)

    clips = torch.rand(1, 1, 3, 4, 4) + 0.5
    raw, _ = gradcam_maps(TimeWeighted(), clips, target=0)
    # w_t = dF/dA averaged over space = w[t] / (T H W) * (H W) / (H W)...; ReLU kills the t with w < 0
    expected = torch.relu(torch.tensor([1.0, -1.0, 2.0]).view(3, 1, 1) / 48 * clips[0, 0])
    torch.testing.assert_close(raw[0], expected)
    pooled, _ = gradcam_maps(TimeWeighted(), clips, target=0, time_pooled_weights=True)
    torch.testing.assert_close(pooled[0], (2.0 / 3) / 48 * clips[0, 0])


def test_coarse_time_axis_is_repeated_over_its_input_frames():
    coarse = torch.arange(2, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 2, 2)
    up = upsample_maps(coarse, (6, 4, 4))
    assert up[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    maps = normalise_maps(torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]]]), "frame")
    assert maps.tolist() == [[[[0.0, 1.0]], [[0.0, 0.0]]]]


@pytest.mark.parametrize("name", ["cnn3d", "convlstm"])
def test_gradcam_on_the_temporal_shape_models(name):
    torch.manual_seed(0)
    options = {"frames": 16} if name == "cnn3d" else {}
    model = create_model(name, 5, 1, hidden=4, input_size=32, **options)
    clips = torch.rand(2, 1, 16, 32, 32)
    maps = gradcam(model, clips)
    assert maps.shape == (2, 16, 32, 32)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    assert all(p.grad is None for p in model.parameters())
    if name == "convlstm":  # hidden states of every step: one map per input frame, not repeated
        raw, _ = gradcam_maps(model, clips)
        assert raw.shape == (2, 16, 8, 8)


def test_convlstm_gradcam_uses_the_hidden_state_gradient():
    torch.manual_seed(0)
    model = create_model("convlstm", 3, 1, hidden=4, blocks=1, input_size=16).eval()
    clips = torch.rand(1, 1, 5, 16, 16)
    store = []
    handle = model.get_submodule(model.explain_layer).register_forward_hook(lambda m, i, o: store.append(o))
    logits = model(clips)
    handle.remove()
    target = int(logits.argmax())
    (grad,) = torch.autograd.grad(logits[0, target], store[0])
    expected = torch.relu((grad.mean(dim=(3, 4), keepdim=True) * store[0]).sum(dim=1))
    raw, _ = gradcam_maps(model, clips)
    torch.testing.assert_close(raw, expected.detach())


def test_two_stream_gradcam_on_the_flow_stream():
    class TwoStream(nn.Module):
        streams = ("rgb", "flow")
        explain_layers = {"rgb": "rgb_conv", "flow": "flow_conv"}
        explain_layer = "rgb_conv"

        def __init__(self) -> None:
            super().__init__()
            self.rgb_conv, self.flow_conv = nn.Conv3d(3, 2, 3, padding=1), nn.Conv3d(2, 2, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, rgb, flow):
            feats = torch.cat([self.rgb_conv(rgb).mean(dim=(2, 3, 4)), self.flow_conv(flow).mean(dim=(2, 3, 4))], 1)
            return self.head(feats)

    torch.manual_seed(0)
    model = TwoStream()
    clips = {"rgb": torch.rand(2, 3, 4, 8, 8), "flow": torch.rand(2, 2, 4, 8, 8)}
    maps = gradcam(model, clips, stream="flow")
    assert maps.shape == (2, 4, 8, 8)
    # the flow stream's own layer: under GAP -> linear, w_kt = W[c, 2 + k] / (T H W) for every t
    raw, targets = gradcam_maps(model, clips, stream="flow")
    with torch.no_grad():
        activations = model.flow_conv(clips["flow"])
        weights = model.head.weight[targets][:, 2:] / (4 * 8 * 8)
        expected = torch.relu((weights[:, :, None, None, None] * activations).sum(dim=1))
    torch.testing.assert_close(raw, expected)
