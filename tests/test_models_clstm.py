"""C-LSTM of Mänttäri 2020 §4.2: its parameter count and its shapes."""

from __future__ import annotations

import torch

from kinetoscope.models import create_model


def test_convlstms_and_dense_layer_have_the_papers_1_323_950_parameters():
    with torch.device("meta"):
        model = create_model("clstm_accv", 174)
    bn = sum(p.numel() for n, p in model.named_parameters() if ".bn." in n)
    total = sum(p.numel() for p in model.parameters())
    assert total - bn == 1_323_950  # Mänttäri 2020 §4.2: ConvLSTMs + dense with 'same' padding
    assert bn == 3 * 2 * 32
    assert model.classifier.in_features == 32 * 3 * 3 * 16  # 224 -> 112 -> 56 -> 28 -> 14 -> 7 -> 3


def test_small_clstm_trains_and_its_explain_layer_sees_hidden_states():
    model = create_model("clstm_accv", 5, 1, hidden=4, layers=2, input_size=32, frames=6)
    seen = {}
    model.get_submodule(model.explain_layer).register_forward_hook(lambda m, i, o: seen.update(h=o.shape))
    logits = model(torch.rand(2, 1, 6, 32, 32))
    logits.sum().backward()
    assert logits.shape == (2, 5)
    assert seen["h"] == (2, 4, 6, 4, 4)  # 32 -> stride 2 -> 16 -> pool 8 -> stride 2 -> 4
