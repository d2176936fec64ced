"""Divided space-time TimeSformer (Bertasius et al. 2021; Broomé 2022 §5.3-5.4)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kinetoscope.models import create_model
from kinetoscope.models.timesformer import DividedAttention, apply_rotary, rotary_angles


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("hidden", "params"), [(2, 20_421), (48, 8_968_709)])
def test_temporal_shape_timesformer_spans_the_thesis_20k_to_9m_parameters(hidden: int, params: int) -> None:
    # Broomé 2022 §5.3: 3 blocks, 8 heads, D_h = h, D = 8h, patch 16, 64x64 grayscale, 5 classes ("≈20k ... 9M")
    with torch.device("meta"):
        model = create_model("timesformer", 5, 1, hidden=hidden, input_size=64, frames=20)
    assert count(model) == params


def test_each_block_has_20_d_squared_plus_17_d_parameters() -> None:
    with torch.device("meta"):
        model = create_model("timesformer", 48, 3, hidden=32, depth=11, input_size=224, frames=32)
    dim = 8 * 32
    assert all(count(block) == 20 * dim**2 + 17 * dim for block in model.blocks)
    assert round(count(model) / 1e6, 1) == 14.7  # Diving48 e-h: "≈14M" (Broomé 2022 §5.4)


def reference_divided_attention(attention: DividedAttention, x: torch.Tensor, axis: str, frames: int,
                                angles: torch.Tensor | None) -> torch.Tensor:
    """Full attention over all tokens with a mask: patches see their group and the class token."""
    batch, length, _ = x.shape
    patches = (length - 1) // frames
    heads, head_dim = attention.heads, attention.head_dim
    q, k, v = attention.qkv(x).view(batch, length, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    frame_of = torch.arange(frames * patches) // patches
    patch_of = torch.arange(frames * patches) % patches
    group = patch_of if axis == "time" else frame_of
    position = frame_of if axis == "time" else patch_of
    allowed = torch.ones(length, length, dtype=torch.bool)
    allowed[1:, 1:] = group[:, None] == group[None, :]
    if angles is not None:
        q_rot = torch.cat((q[:, :, :1], apply_rotary(q[:, :, 1:], angles[position])), dim=2)
        k_rot = torch.cat((k[:, :, :1], apply_rotary(k[:, :, 1:], angles[position])), dim=2)
    else:
        q_rot, k_rot = q, k
    patch_out = F.scaled_dot_product_attention(q_rot[:, :, 1:], k_rot, v, attn_mask=allowed[1:])
    cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)
    out = torch.cat((cls_out, patch_out), dim=2).transpose(1, 2).reshape(batch, length, heads * head_dim)
    return attention.proj(out)


@pytest.mark.parametrize("axis", ["time", "space"])
@pytest.mark.parametrize("rotary", [False, True])
def test_divided_attention_equals_masked_full_attention(axis: str, rotary: bool) -> None:
    torch.manual_seed(0)
    frames, rows, cols, dim = 3, 2, 3, 16
    attention = DividedAttention(dim, heads=2, head_dim=8, dropout=0.0, attention_dropout=0.0).eval()
    x = torch.randn(2, 1 + frames * rows * cols, dim)
    angles = None
    if rotary:
        if axis == "time":
            angles = rotary_angles(torch.arange(frames)[:, None], 8)
        else:
            grid = torch.stack(torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij"), -1)
            angles = rotary_angles(grid.reshape(-1, 2), 8)
    with torch.no_grad():
        ours = attention(x, axis, frames, angles)
        reference = reference_divided_attention(attention, x, axis, frames, angles)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_rotary_scores_depend_only_on_the_position_offset() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    angles = rotary_angles(torch.arange(10)[:, None], 8)

    def score(i: int, j: int) -> torch.Tensor:
        return apply_rotary(q[None], angles[i : i + 1])[0] @ apply_rotary(k[None], angles[j : j + 1])[0]

    assert torch.allclose(score(2, 5), score(4, 7), atol=1e-5)
    assert torch.allclose(score(0, 0), q @ k, atol=1e-5)
    assert not torch.allclose(score(2, 5), score(2, 6), atol=1e-3)


def test_explain_layer_tokens_map_back_to_a_feature_volume() -> None:
    model = create_model("timesformer", 5, 1, hidden=4, heads=2, depth=2, input_size=64).eval()
    captured = []
    model.get_submodule(model.explain_layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 6, 64, 64))
    assert logits.shape == (2, 5)
    assert model.token_grid == (6, 4, 4)
    assert model.tokens_to_volume(captured[0]).shape == (2, 8, 6, 4, 4)


def test_learned_positions_add_space_and_time_embeddings() -> None:
    rotary = create_model("timesformer", 5, 1, hidden=4, heads=2, input_size=64, frames=10)
    learned = create_model("timesformer", 5, 1, hidden=4, heads=2, input_size=64, frames=10, position="learned")
    dim, patches = 8, 16
    assert count(learned) - count(rotary) == (1 + patches) * dim + 10 * dim
    with pytest.raises(ValueError, match="built for 10 frames"):
        learned(torch.randn(1, 1, 12, 64, 64))


def test_odd_head_dim_is_refused_for_rotary_positions() -> None:
    with pytest.raises(ValueError, match="must be even"):
        create_model("timesformer", 5, 1, hidden=3)
