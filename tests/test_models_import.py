"""Weight import from torchvision / PyTorchVideo layouts.

Neither library is installed, so foreign checkpoints are built from the key/shape lists of
shared/reference/reference_models.json (random tensors of the listed shapes, saved with ``torch.save``),
and numerics are checked by exporting a kinetoscope model to the foreign layout and importing it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kinetoscope.models import create_model
from kinetoscope.models.weights import (
    WeightMismatchError,
    export_state_dict,
    get_mapping,
    import_weights,
    load_safetensors,
    map_state_dict,
    read_checkpoint,
    safetensors_metadata,
    save_safetensors,
)

# The layouts used here, copied from shared/reference/reference_models.json so CI needs nothing outside the repo.
REFERENCE_FILE = Path(__file__).resolve().parent / "data" / "reference_layouts.json"
PAIRS = [
    ("torchvision", "r3d_18"),
    ("torchvision", "mc3_18"),
    ("torchvision", "r2plus1d_18"),
    ("pytorchvideo", "x3d_s"),
    ("pytorchvideo", "x3d_l"),
]


@pytest.fixture(scope="module")
def reference() -> dict:
    assert REFERENCE_FILE.is_file(), f"reference layouts missing: {REFERENCE_FILE}"
    return json.loads(REFERENCE_FILE.read_text())


def foreign_state(reference: dict, source: str, name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in the foreign library's exact key/shape layout."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in reference[f"{source}.{name}"]["state_dict"].items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(17, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


def randomise_batch_norm_statistics(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(module.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize(("source", "name"), PAIRS + [("pytorchvideo", "x3d_xs"), ("pytorchvideo", "x3d_m")])
def test_reference_keys_map_onto_exactly_the_models_keys_and_shapes(reference, source, name) -> None:
    with torch.device("meta"):
        model = create_model(name, num_classes=400)
        expected = model.state_dict()
    layout = reference[f"{source}.{name}"]["state_dict"]
    foreign = {k: torch.empty(s, device="meta") for k, s in layout.items()}
    mapping = get_mapping(source, name)
    mapped, _ = map_state_dict(foreign, mapping, expected, "reference")  # raises on any difference
    assert set(mapped) == set(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)
    # and the inverse mapping gives back the library's own names and shapes, in its order
    exported = {mapping.foreign_key(k): (*v.shape, *[1] * mapping.extra_dims(k)) for k, v in expected.items()}
    assert list(exported) == list(foreign)
    assert all(list(exported[k]) == list(foreign[k].shape) for k in foreign)


@pytest.mark.parametrize(("source", "name"), PAIRS)
def test_import_copies_every_tensor_and_writes_safetensors(reference, tmp_path, source, name) -> None:
    foreign = foreign_state(reference, source, name)
    checkpoint = tmp_path / f"{name}.pth"
    torch.save(foreign, checkpoint)
    out = tmp_path / "out" / f"{name}.safetensors"
    model, report = import_weights(source, name, checkpoint, out)
    mapping = get_mapping(source, name)
    state = model.state_dict()
    for key, tensor in foreign.items():
        assert torch.equal(state[mapping.kinetoscope_key(key)].reshape(tensor.shape), tensor), key
    assert report.tensors == len(foreign) and report.out_path == out
    assert f"wrote {out}" in str(report) and f"{len(foreign)} tensors" in report.summary()
    assert report.options == {"num_classes": 400, "in_channels": 3}
    assert (report.reshaped == ["head.fc1.weight"]) == (source == "pytorchvideo")
    assert safetensors_metadata(out)["kinetoscope_model"] == name
    fresh = load_safetensors(create_model(name, num_classes=400), out)
    assert all(torch.equal(v, state[k]) for k, v in fresh.state_dict().items())
    # the weights and their sha256 (checked on every load), no temp file left behind
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name, out.name + ".sha256"]


@pytest.mark.parametrize(("source", "name"), PAIRS[:4])  # x3d_l: same mapping as x3d_s, 4x the blocks
def test_export_then_import_reproduces_the_models_outputs(tmp_path, source, name) -> None:
    torch.manual_seed(1)
    original = create_model(name, num_classes=6)
    randomise_batch_norm_statistics(original)
    original.eval()
    checkpoint = tmp_path / "exported.pt"
    torch.save({"model_state": export_state_dict(original, source, name)}, checkpoint)
    imported, report = import_weights(source, name, checkpoint)
    assert report.options["num_classes"] == 6 and report.out_path is None
    clip = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        expected, actual = original(clip), imported(clip)
    assert torch.equal(expected, actual)
    assert expected.abs().max() > 0  # a real signal, not two zero vectors


def test_an_mc3_checkpoint_is_refused_as_r3d_with_a_diff_naming_each_layer(reference, tmp_path) -> None:
    checkpoint = tmp_path / "mc3.pth"
    torch.save(foreign_state(reference, "torchvision", "mc3_18"), checkpoint)
    out = tmp_path / "r3d.safetensors"
    with pytest.raises(WeightMismatchError) as info:
        import_weights("torchvision", "r3d_18", checkpoint, out)
    error = info.value
    assert not error.missing and not error.unexpected
    # stages 2-4 of MC3 are 1x3x3: 2 blocks x 2 convs x 3 stages = 12 mis-shaped conv weights
    assert len(error.shape_mismatches) == 12
    message = str(error)
    assert "'layer2.0.conv1.weight' (checkpoint key 'layer2.0.conv1.0.weight'): [128, 64, 1, 3, 3]" in message
    assert "[128, 64, 3, 3, 3]" in message and str(checkpoint) in message
    assert not out.exists()


def test_missing_and_unexpected_keys_are_listed_and_truncated(reference, tmp_path) -> None:
    foreign = foreign_state(reference, "pytorchvideo", "x3d_s")
    for key in [k for k in foreign if k.startswith("blocks.3.")]:
        del foreign[key]
    foreign["blocks.6.extra.weight"] = torch.zeros(3)
    checkpoint = tmp_path / "broken.pyth"
    torch.save(foreign, checkpoint)
    with pytest.raises(WeightMismatchError) as info:
        import_weights("pytorchvideo", "x3d_s", checkpoint)
    error = info.value
    expected_line = "'layer3.0.conv_a.weight' (checkpoint key 'blocks.3.res_blocks.0.branch2.conv_a.weight')"
    assert expected_line in error.missing
    assert error.unexpected == ["'blocks.6.extra.weight'"]
    assert f"... and {len(error.missing) - 12} more" in str(error)


def test_containers_and_data_parallel_prefixes_are_accepted(tmp_path) -> None:
    weights = {"module.fc.weight": torch.ones(2, 3), "module.fc.bias": torch.zeros(2)}
    for container in ("state_dict", "model_state"):
        torch.save({container: weights, "epoch": 3}, tmp_path / "c.pt")
        assert set(read_checkpoint(tmp_path / "c.pt")) == {"fc.weight", "fc.bias"}


def test_non_state_dict_files_are_refused_by_name(tmp_path) -> None:
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt holds a list"):
        read_checkpoint(tmp_path / "list.pt")
    torch.save({"fc.weight": torch.ones(1), "note": "text"}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match=r"\['note'\] are not tensors"):
        read_checkpoint(tmp_path / "mixed.pt")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        read_checkpoint(tmp_path / "nothing.pt")


def test_unknown_source_or_model_lists_what_is_supported() -> None:
    with pytest.raises(ValueError, match="torchvision, pytorchvideo"):
        get_mapping("timm", "r3d_18")
    with pytest.raises(ValueError, match="x3d_xs, x3d_s, x3d_m, x3d_l"):
        get_mapping("pytorchvideo", "r3d_18")


def test_fine_tuned_head_input_channels_and_bottleneck_expansion_are_read_from_the_checkpoint() -> None:
    infer = get_mapping("torchvision", "r3d_50").infer_options
    options = infer({"fc.weight": torch.empty(101, 2048), "stem.0.weight": torch.empty(64, 2, 3, 7, 7)})
    assert options == {"num_classes": 101, "bottleneck_expansion": 4, "in_channels": 2}
    assert get_mapping("torchvision", "r3d_18").infer_options({"fc.weight": torch.empty(51, 512)}) == {
        "num_classes": 51
    }


def test_load_safetensors_is_strict_and_names_the_mismatch(tmp_path) -> None:
    small = create_model("x3d_xs", num_classes=5)
    path = save_safetensors(small, tmp_path / "w.safetensors", {"note": "test"})
    with pytest.raises(WeightMismatchError, match="'fc.weight': \\[5, 2048\\] in the checkpoint"):
        load_safetensors(create_model("x3d_xs", num_classes=7), path)
    with pytest.raises(WeightMismatchError, match="'layer1.3.conv_a.weight'"):
        load_safetensors(create_model("x3d_l", num_classes=5), path)
    assert safetensors_metadata(path) == {"note": "test"}
