"""RAFT (Teed & Deng 2020) in torchvision's layout: parameter counts, checkpoint round trip, padding,
refinement, batching and the correlation lookup against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinetoscope.checkpoint_io import WeightMismatchError
from kinetoscope.flow import compute_flow
from kinetoscope.flow.raft import (
    RAFT,
    RaftEstimator,
    correlation_pyramid,
    default_weights_path,
    import_torchvision_raft,
    lookup,
    padding_for,
    read_raft_weights,
)
from kinetoscope.models.weights import import_weights

TORCHVISION_PARAMS = {"small": 990_162, "large": 5_257_536}  # torchvision's Raft_*_Weights meta num_params


def torchvision_layout(variant: str) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Every state_dict key of torchvision's ``raft_<variant>()`` with its shape and whether it is a
    parameter (not a buffer), written out from torchvision's constructor arguments independently of
    kinetoscope's modules. ``Conv2dNormActivation`` is ``Sequential(conv, [norm], [ReLU])``."""
    large = variant == "large"
    keys: dict[str, tuple[tuple[int, ...], bool]] = {}

    def conv(prefix, cin, cout, kh, kw=None):
        keys[f"{prefix}.weight"] = ((cout, cin, kh, kw or kh), True)
        keys[f"{prefix}.bias"] = ((cout,), True)

    def unit(prefix, cin, cout, k, norm=None):
        conv(f"{prefix}.0", cin, cout, k)
        if norm == "batch":
            keys[f"{prefix}.1.weight"] = ((cout,), True)
            keys[f"{prefix}.1.bias"] = ((cout,), True)
            keys[f"{prefix}.1.running_mean"] = ((cout,), False)
            keys[f"{prefix}.1.running_var"] = ((cout,), False)
            keys[f"{prefix}.1.num_batches_tracked"] = ((), False)

    def encoder(prefix, layers, norm):
        unit(f"{prefix}.convnormrelu", 3, layers[0], 7, norm)
        cin = layers[0]
        for stage, (cout, stride) in enumerate(zip(layers[1:4], (1, 2, 2), strict=True), start=1):
            for b in range(2):
                p = f"{prefix}.layer{stage}.{b}"
                if large:
                    unit(f"{p}.convnormrelu1", cin, cout, 3, norm)
                    unit(f"{p}.convnormrelu2", cout, cout, 3, norm)
                else:
                    unit(f"{p}.convnormrelu1", cin, cout // 4, 1, norm)
                    unit(f"{p}.convnormrelu2", cout // 4, cout // 4, 3, norm)
                    unit(f"{p}.convnormrelu3", cout // 4, cout, 1, norm)
                if b == 0 and stride != 1:
                    unit(f"{p}.downsample", cin, cout, 1, norm)
                cin = cout
        conv(f"{prefix}.conv", layers[3], layers[4], 1)

    if large:
        encoder("feature_encoder", (64, 64, 96, 128, 256), "instance")
        encoder("context_encoder", (64, 64, 96, 128, 256), "batch")
        corr, hidden, context = 4 * 81, 128, 128
        unit("update_block.motion_encoder.convcorr1", corr, 256, 1)
        unit("update_block.motion_encoder.convcorr2", 256, 192, 3)
        unit("update_block.motion_encoder.convflow1", 2, 128, 7)
        unit("update_block.motion_encoder.convflow2", 128, 64, 3)
        unit("update_block.motion_encoder.conv", 192 + 64, 126, 3)
        for gru, (kh, kw) in (("convgru1", (1, 5)), ("convgru2", (5, 1))):
            for gate in "zrq":
                conv(f"update_block.recurrent_block.{gru}.conv{gate}", hidden + 128 + context, hidden, kh, kw)
        conv("update_block.flow_head.conv1", hidden, 256, 3)
        conv("update_block.flow_head.conv2", 256, 2, 3)
        unit("mask_predictor.convrelu", hidden, 256, 3)
        conv("mask_predictor.conv", 256, 576, 1)
    else:
        encoder("feature_encoder", (32, 32, 64, 96, 128), "instance")
        encoder("context_encoder", (32, 32, 64, 96, 160), None)
        corr, hidden, context = 4 * 49, 96, 64
        unit("update_block.motion_encoder.convcorr1", corr, 96, 1)
        unit("update_block.motion_encoder.convflow1", 2, 64, 7)
        unit("update_block.motion_encoder.convflow2", 64, 32, 3)
        unit("update_block.motion_encoder.conv", 96 + 32, 80, 3)
        for gate in "zrq":
            conv(f"update_block.recurrent_block.convgru1.conv{gate}", hidden + 82 + context, hidden, 3)
        conv("update_block.flow_head.conv1", hidden, 128, 3)
        conv("update_block.flow_head.conv2", 128, 2, 3)
    return keys


def torchvision_checkpoint(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A self-made checkpoint in torchvision's layout with random (but sane) values."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, _) in torchvision_layout(variant).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000, dtype=torch.int64)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            state[key] = torch.randn(shape, generator=generator) / math.sqrt(fan_in)
    return state


def frames_moving(size=(64, 80), steps=3, shift=3, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[0], size[1] + shift * steps, 3), dtype=np.uint8)
    return np.stack([base[:, t * shift:t * shift + size[1]] for t in range(steps)])


@pytest.mark.parametrize("variant", ["small", "large"])
def test_parameter_count_and_key_layout_equal_torchvision(variant):
    layout = torchvision_layout(variant)
    assert sum(math.prod(shape) for shape, is_param in layout.values() if is_param) == TORCHVISION_PARAMS[variant]
    model = RAFT(variant)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[variant]
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: s for k, (s, _) in layout.items()}


@pytest.mark.parametrize("variant", ["small", "large"])
def test_checkpoint_round_trip(tmp_path, variant):
    state = torchvision_checkpoint(variant)
    checkpoint = tmp_path / f"raft_{variant}.pth"
    torch.save(state, checkpoint)
    out = tmp_path / "imported.safetensors"
    model, report = import_weights("torchvision", f"raft_{variant}", checkpoint, out)
    assert report.parameters == TORCHVISION_PARAMS[variant] and report.out_path == out
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    reread = read_raft_weights(out)
    assert reread.variant == variant
    assert all(torch.equal(reread.state_dict()[k], v) for k, v in state.items())
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(a, b, 2)[-1], reread(a, b, 2)[-1])


def test_wrong_layout_lists_keys_and_writes_nothing(tmp_path):
    state = torchvision_checkpoint("small")
    del state["update_block.flow_head.conv2.bias"]
    state["update_block.extra.weight"] = torch.zeros(3)
    state["update_block.flow_head.conv1.weight"] = torch.zeros(128, 96, 5, 5)
    checkpoint = tmp_path / "bad.pth"
    torch.save(state, checkpoint)
    out = tmp_path / "never.safetensors"
    with pytest.raises(WeightMismatchError) as info:
        import_torchvision_raft(checkpoint, out, "small")
    message = str(info.value)
    assert "update_block.flow_head.conv2.bias" in message and "update_block.extra.weight" in message
    assert "update_block.flow_head.conv1.weight" in message and "[128, 96, 5, 5]" in message
    assert not out.exists()


def test_missing_weights_say_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path))
    monkeypatch.delenv("KINETOSCOPE_RAFT_WEIGHTS", raising=False)
    with pytest.raises(FileNotFoundError) as info:
        compute_flow(frames_moving(), "raft")
    message = str(info.value)
    assert str(default_weights_path("large")) in message
    assert "kinetoscope models import --from torchvision raft_large" in message
    assert "raft_large_C_T_SKHT_V2-ff5fadd5.pth" in message


def test_compute_flow_raft_uses_imported_weights_from_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path))
    monkeypatch.delenv("KINETOSCOPE_RAFT_WEIGHTS", raising=False)
    checkpoint = tmp_path / "raft_small_C_T_V2.pth"
    torch.save(torchvision_checkpoint("small"), checkpoint)
    model, _ = import_torchvision_raft(checkpoint)  # default: into the cache
    assert default_weights_path("small").is_file()
    frames = frames_moving()
    flow = compute_flow(frames, "raft", variant="small", iterations=3, device="cpu")
    expected = RaftEstimator(model, iterations=3).estimate_pairs(frames, [(0, 1), (1, 2)])
    assert flow.shape == (2, 64, 80, 2) and flow.dtype == np.float32
    np.testing.assert_allclose(flow, expected, atol=1e-5)
    with pytest.raises(ValueError, match="variant='small'"):
        compute_flow(frames, "raft", weights=str(default_weights_path("small")), variant="large")


def test_padding_to_minimum_size_and_crop_back():
    assert padding_for(64, 80) == (24, 24, 32, 32)  # up to 128 x 128, centred
    assert padding_for(130, 250) == (3, 3, 3, 3)  # up to multiples of 8
    assert padding_for(136, 256) == (0, 0, 0, 0)
    torch.manual_seed(0)
    model = RAFT("small").eval()
    estimator = RaftEstimator(model, iterations=2)
    frames = frames_moving(size=(50, 70))
    flow = estimator.estimate_pairs(frames, [(0, 1)])
    assert flow.shape == (1, 50, 70, 2)
    # the same as running the model on the edge-padded frames and cropping the flow
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    left, right, top, bottom = padding_for(50, 70)
    x = F.pad(x, (left, right, top, bottom), mode="replicate")
    with torch.no_grad():
        full = model(x[:1], x[1:2], 2)[-1][0, :, top:top + 50, left:left + 70]
    np.testing.assert_allclose(flow[0], full.permute(1, 2, 0).numpy(), atol=1e-5)
    upsampled = RaftEstimator(model, iterations=2, upsample=2.0).estimate_pairs(frames, [(0, 1)])
    assert upsampled.shape == (1, 50, 70, 2) and np.isfinite(upsampled).all()
    with pytest.raises(ValueError, match="divisible by 8 and >= 128"):
        model(x[:1, :, :120, :120], x[1:2, :, :120, :120])


def test_iterative_refinement_count_and_prefix():
    torch.manual_seed(0)
    model = RAFT("small").eval()
    a, b = torch.rand(2, 2, 3, 128, 136) * 2 - 1
    with torch.no_grad():
        five = model(a, b, iterations=5)
        three = model(a, b, iterations=3)
    assert len(five) == 5 and len(three) == 3
    assert all(f.shape == (2, 2, 128, 136) for f in five)
    assert all(not torch.equal(five[i], five[i + 1]) for i in range(4))  # every step updates the flow
    for i in range(3):  # step i does not depend on how many steps follow
        torch.testing.assert_close(five[i], three[i])


@pytest.mark.parametrize("variant", ["small", "large"])
def test_zero_motion_batch_equals_single(variant):
    torch.manual_seed(1)
    model = RAFT(variant).eval()
    rng = np.random.default_rng(0)
    still = rng.integers(0, 256, (3, 96, 112, 3), dtype=np.uint8)
    frames = np.concatenate([still, still])  # frame i and i + 3 are the same: zero motion
    pairs = [(0, 3), (1, 4), (2, 5)]
    batched = RaftEstimator(model, iterations=2, batch_size=3).estimate_pairs(frames, pairs)
    single = np.stack([RaftEstimator(model, iterations=2, batch_size=1)(frames[i], frames[j]) for i, j in pairs])
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert not np.allclose(batched[0], batched[1])  # different content, different (untrained) output


def test_correlation_lookup_equals_direct_dot_products():
    torch.manual_seed(0)
    b, d, h, w, levels, radius = 2, 8, 16, 24, 4, 2
    f1, f2 = torch.randn(b, d, h, w), torch.randn(b, d, h, w)
    pyramid = correlation_pyramid(f1, f2, levels)
    assert [tuple(p.shape) for p in pyramid] == [(b * h * w, 1, h >> l, w >> l) for l in range(levels)]
    # centres on multiples of 8, so every level samples whole pixels of the pooled frame-2 features
    coords = torch.zeros(b, 2, h, w)
    coords[:, 0] = torch.randint(0, w // 8, (b, h, w)) * 8
    coords[:, 1] = torch.randint(0, h // 8, (b, h, w)) * 8
    features = lookup(pyramid, coords, radius)
    side = 2 * radius + 1
    assert features.shape == (b, levels * side * side, h, w)
    for n, y, x in [(0, 0, 0), (1, 5, 7), (0, 15, 23), (1, 9, 2)]:
        for level in range(levels):
            pooled = F.avg_pool2d(f2, 2**level) if level else f2  # pooling C over q = correlating pooled g2
            cx, cy = int(coords[n, 0, y, x]) >> level, int(coords[n, 1, y, x]) >> level
            for dx in range(-radius, radius + 1):
                for dy in range(-radius, radius + 1):
                    qx, qy = cx + dx, cy + dy
                    inside = 0 <= qx < pooled.shape[-1] and 0 <= qy < pooled.shape[-2]
                    direct = float(f1[n, :, y, x] @ pooled[n, :, qy, qx]) / math.sqrt(d) if inside else 0.0
                    channel = level * side * side + (dx + radius) * side + (dy + radius)
                    assert float(features[n, channel, y, x]) == pytest.approx(direct, abs=1e-4)
    # a fractional position at level 0 interpolates the dot products bilinearly
    coords = torch.full((1, 2, h, w), 0.0)
    coords[0, 0, 3, 4], coords[0, 1, 3, 4] = 6.25, 9.5
    level0 = lookup(correlation_pyramid(f1[:1], f2[:1], 1), coords, 0)[0, 0, 3, 4]
    dots = torch.einsum("d,dyx->yx", f1[0, :, 3, 4], f2[0]) / math.sqrt(d)
    expected = (0.75 * 0.5 * dots[9, 6] + 0.25 * 0.5 * dots[9, 7] + 0.75 * 0.5 * dots[10, 6]
                + 0.25 * 0.5 * dots[10, 7])
    assert float(level0) == pytest.approx(float(expected), abs=1e-4)


def test_cli_import_writes_the_cache_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kinetoscope.cli import app

    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path / "cache"))
    checkpoint = tmp_path / "raft_small_C_T_V2-01064c6d.pth"
    torch.save(torchvision_checkpoint("small"), checkpoint)
    result = CliRunner().invoke(app, ["models", "import", "--from", "torchvision", "raft_small", str(checkpoint)])
    assert result.exit_code == 0, result.output
    assert "990,162 parameters" in result.output
    assert read_raft_weights(tmp_path / "cache" / "raft" / "raft_small.safetensors").variant == "small"


def test_auto_uses_raft_when_imported_else_the_measured_fallback(tmp_path, monkeypatch, caplog):
    from kinetoscope.flow import FlowSpec
    from kinetoscope.flow.compute import AFD_FALLBACK, resolve_method
    from kinetoscope.synth import appearance_free

    monkeypatch.setenv("KINETOSCOPE_CACHE", str(tmp_path))
    monkeypatch.delenv("KINETOSCOPE_RAFT_WEIGHTS", raising=False)
    with caplog.at_level("WARNING"):
        assert resolve_method("auto") == AFD_FALLBACK
    assert "no trained RAFT weights" in caplog.text
    assert (FlowSpec(method="auto").method, FlowSpec(method="auto").options) == AFD_FALLBACK
    with pytest.raises(ValueError, match="takes no options"):
        resolve_method("auto", {"preset": "fast"})

    small = tmp_path / "raft_small.pth"
    torch.save(torchvision_checkpoint("small"), small)
    import_torchvision_raft(small)
    assert resolve_method("auto") == ("raft", {"variant": "small"})
    checkpoint = tmp_path / "raft_large.pth"
    torch.save(torchvision_checkpoint("large"), checkpoint)
    import_torchvision_raft(checkpoint)
    assert resolve_method("auto") == ("raft", {})  # the large model when both are there
    assert FlowSpec(method="auto").method == "raft"
    frames = frames_moving(size=(48, 56), steps=2)
    noise = appearance_free(frames, seed=0)  # default flow method: auto -> raft
    expected = appearance_free(frames, seed=0, flow=compute_flow(frames, "raft"))
    np.testing.assert_array_equal(noise, expected)


def test_convex_upsampling_takes_the_neighbour_the_mask_selects():
    from kinetoscope.flow.raft import convex_upsample

    torch.manual_seed(0)
    flow = torch.randn(2, 2, 5, 6)
    for k, (dy, dx) in [(4, (0, 0)), (5, (0, 1)), (1, (-1, 0))]:  # 3x3 neighbours in raster order
        mask = torch.full((2, 9, 8, 8, 5, 6), -50.0)
        mask[:, k] = 50.0  # all weight on neighbour k, for every sub-pixel of every cell
        fine = convex_upsample(flow, mask.reshape(2, 576, 5, 6))
        shifted = F.pad(flow, (1, 1, 1, 1))[:, :, 1 + dy:6 + dy, 1 + dx:7 + dx]  # zero outside
        expected = 8 * shifted.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
        torch.testing.assert_close(fine, expected)
    # a mask that differs per sub-pixel row lands in that row of the cell
    mask = torch.full((1, 9, 8, 8, 5, 6), -50.0)
    mask[:, 4] = 50.0
    mask[:, 4, 3] = -50.0
    mask[:, 5, 3] = 50.0  # sub-pixel row 3 takes the right neighbour
    fine = convex_upsample(flow[:1], mask.reshape(1, 576, 5, 6))
    torch.testing.assert_close(fine[0, :, 8 * 2 + 3, 8 * 1 + 4], 8 * flow[0, :, 2, 2])
    torch.testing.assert_close(fine[0, :, 8 * 2 + 2, 8 * 1 + 4], 8 * flow[0, :, 2, 1])
