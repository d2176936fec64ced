"""DINO ViT-S/8 (Caron et al. 2021) as the key extractor of Ilic 2024 §5.3: layout, import, keys."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kinetoscope.models.dino_vit import DinoKeyExtractor, DinoViT, dino_vits8, load_dino_vits8, make_key_extractor
from kinetoscope.models.weights import WeightMismatchError, import_weights


def _tiny() -> DinoViT:
    return DinoViT(patch=8, dim=24, depth=2, heads=2, image_size=32)


def test_vits8_has_the_public_checkpoint_parameter_count_and_layout():
    model = dino_vits8()
    assert sum(p.numel() for p in model.parameters()) == 21_670_272
    state = model.state_dict()
    assert tuple(state["pos_embed"].shape) == (1, 785, 384)
    assert tuple(state["patch_embed.proj.weight"].shape) == (384, 3, 8, 8)
    assert tuple(state["blocks.11.attn.qkv.weight"].shape) == (1152, 384)
    assert tuple(state["blocks.11.mlp.fc1.weight"].shape) == (1536, 384)
    assert {"cls_token", "norm.weight", "norm.bias", "blocks.0.attn.qkv.bias"} <= set(state)
    assert len(state) == 4 + 12 * 12 + 2


def test_keys_are_the_key_slice_of_the_last_blocks_qkv_at_stride_4():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    keys = model.keys(x, stride=4)
    assert keys.shape == (2, 7, 7, 24)  # (32 - 8) / 4 + 1 = 7
    # by hand at the native stride: no position resampling, block 0 then block 1's key projection
    tokens, rows, cols = model.tokens(x)
    tokens = model.blocks[0](tokens)
    qkv = model.blocks[1].attn.qkv(model.blocks[1].norm1(tokens))
    expected = qkv[:, 1:, 24:48].reshape(2, 4, 4, 24)
    torch.testing.assert_close(model.keys(x), expected)
    assert model(x).shape == (2, 24)


def test_import_round_trip_from_a_checkpoint_in_the_dino_layout(tmp_path):
    torch.manual_seed(1)
    original = dino_vits8().eval()
    checkpoint = tmp_path / "dino_deitsmall8_pretrain.pth"
    torch.save(original.state_dict(), checkpoint)  # the public file is a plain state dict with these keys
    out = tmp_path / "dino_vits8.safetensors"
    imported, report = import_weights("dino", "dino_vits8", checkpoint, out)
    assert report.parameters == 21_670_272 and report.renamed == 0 and out.is_file()
    loaded = load_dino_vits8(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.keys(x, stride=4), original.keys(x, stride=4))
    state = original.state_dict()
    state.pop("norm.bias")
    state["head.weight"] = torch.zeros(1000, 384)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightMismatchError, match="norm.bias") as info:
        import_weights("dino", "dino_vits8", tmp_path / "bad.pth")
    assert "head.weight" in str(info.value)


def test_missing_weights_say_where_to_get_the_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="dino_deitsmall8_pretrain.pth.*dl.fbaipublicfiles.com"):
        load_dino_vits8(tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError, match="dl.fbaipublicfiles.com"):
        import_weights("dino", "dino_vits8", tmp_path / "none.pth")
    with pytest.raises(ValueError, match="needs --weights"):
        make_key_extractor("dino")
    with pytest.raises(ValueError, match="dino, colour"):
        make_key_extractor("vgg")


def test_extractor_gives_a_key_grid_and_ids_differ_with_weights():
    torch.manual_seed(2)
    extractor = DinoKeyExtractor(_tiny(), input_size=32, stride=4)
    frames = np.random.default_rng(0).integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    keys = extractor(frames)
    assert keys.shape == (3, 7, 7, 24) and keys.dtype == np.float32
    np.testing.assert_allclose(extractor(frames[1:2])[0], keys[1], atol=1e-5)  # frames are independent
    torch.manual_seed(3)
    assert DinoKeyExtractor(_tiny(), input_size=32).extractor_id != extractor.extractor_id
    with pytest.raises(ValueError, match="uint8"):
        extractor(frames.astype(np.float32))
