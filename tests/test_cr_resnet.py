"""Class Regularisation on video ResNets (Stergiou 2021 Ch. 6): parameter counts of Table 6.4, λ = 1 as the
identity, McNemar's test on the counts of Table 6.6, and the CR explanation maps of §6.3.3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from kinetoscope.evaluate.statistics import mcnemar, mcnemar_predictions
from kinetoscope.explain.class_reg import class_reg_maps
from kinetoscope.layers.class_reg import ClassRegularisation
from kinetoscope.models import create_model
from kinetoscope.registry import EXPLAINERS


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


CR_OVERHEAD = sum(512 * c + c for c in (64, 128, 256, 512))  # Σ_l C'·C_l + C_l, C' = 512


@pytest.mark.parametrize(
    ("plain", "count", "thesis_millions"),
    [("r3d_50", 36_724_688, 36.7), ("r2plus1d_50", 34_863_287, 34.8), ("wide_r3d_50", 140_937_936, 140.9),
     ("r3d_101", 69_060_048, 69.1)],
)
def test_table_6_4_parameter_counts(plain, count, thesis_millions):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        base = n_params(create_model(plain, 400))
        with_cr = create_model(f"{plain}_cr", 400)
    assert base == count and abs(base / 1e6 - thesis_millions) < 0.1  # printed to 0.1M (34.86 -> 34.8)
    assert n_params(with_cr) == count + CR_OVERHEAD == count + 492_480
    assert [m.affection for m in with_cr.class_reg] == [0.9, 0.8, 0.7, 0.6]


def test_affection_one_is_the_plain_network():
    torch.manual_seed(0)
    plain = create_model("r3d_50", 5).eval()
    with_cr = create_model("r3d_50_cr", 5, affection=(1.0, 1.0, 1.0, 1.0)).eval()
    missing = with_cr.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert all(k.startswith("class_reg.") for k in missing) and missing
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_cr(x), plain(x))
        with_cr.class_reg[3].affection = 0.6  # a regularised layer changes the output
        assert not torch.allclose(with_cr(x), plain(x))


def test_mcnemar_reproduces_table_6_6():
    rows = {  # b (CR only right), c (original only right), χ², p as printed
        "r3d-50": (659, 576, 5.445, 1.9e-2), "r(2+1)d-50": (654, 557, 7.610, 5.8e-3),
        "wide-r3d-50": (703, 527, 24.898, 6.0e-7), "r3d-101": (473, 134, 188.211, 7.8e-43),
        "MTNet_S": (878, 707, 18.233, 1.9e-5), "MTNet_M": (678, 538, 15.889, 6.7e-5),
        "MTNet_L": (614, 496, 12.332, 4.4e-4),
    }
    for name, (b, c, chi2, p) in rows.items():
        result = mcnemar(b, c)
        assert round(result.chi2, 3) == pytest.approx(chi2, abs=1e-3), name
        exponent = np.floor(np.log10(p))  # the table truncates p to two digits (0.01963 -> 1.9e-2)
        assert p <= result.p < p + 10 ** (exponent - 1), name


def test_mcnemar_from_predictions():
    labels = np.array([0, 1, 1, 0, 1, 0])
    first = np.array([0, 1, 0, 1, 0, 0])  # right on 0, 1, 5
    second = np.array([0, 1, 1, 0, 0, 1])  # right on 0, 1, 2, 3
    result = mcnemar_predictions(labels, first, second)
    assert (result.a, result.b, result.c, result.d) == (2, 2, 1, 1)
    assert result.chi2 == 0.0 and mcnemar(0, 0).p == 1.0


class _PlantedCR(nn.Module):
    """Two channels straight into CR (λ = 0.5), then GAP and a 2-way classifier; class j <-> channel j."""

    streams = ("rgb",)
    explain_layer = "cr"

    def __init__(self) -> None:
        super().__init__()
        self.cr = ClassRegularisation(channels=2, feature_dim=2, affection=0.5)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.cr.map.weight.copy_(torch.eye(2))
            self.cr.map.bias.zero_()
            self.fc.weight.copy_(torch.eye(2))
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(self.cr(x, self.fc.weight).mean(dim=(2, 3, 4)))


def test_cr_maps_find_the_planted_class_evidence():
    x = torch.zeros(1, 2, 8, 16, 16)
    x[0, 0, 1:3, 1:5, 1:5] = 1.0  # class 0 evidence: top left, frames 1-2
    x[0, 1, 5:7, 10:15, 10:15] = 0.5  # class 1 evidence: bottom right, frames 5-6 (weaker overall)
    model = _PlantedCR()
    maps, targets = class_reg_maps(model, x)
    assert list(maps) == ["cr"] and targets.tolist() == [0]  # predicted class
    t, y, xx = np.unravel_index(maps["cr"][0].argmax(), maps["cr"][0].shape)
    assert t in (1, 2) and y < 6 and xx < 6
    assert maps["cr"][0, 5:7, 10:15, 10:15].max() < 0.1  # class 1's channel has no class-0 weight
    maps, _ = class_reg_maps(model, x, target=1)
    t, y, xx = np.unravel_index(maps["cr"][0].argmax(), maps["cr"][0].shape)
    assert t in (5, 6) and y >= 9 and xx >= 9
    explanation = EXPLAINERS.get("cr-maps")(model, [x], target=1)
    assert explanation.heatmaps.shape == (1, 8, 16, 16) and explanation.values[0]["target"] == 1


def test_cr_maps_for_every_stage_of_a_cr_resnet():
    model = create_model("r3d_50_cr", 3)
    maps, targets = class_reg_maps(model, torch.randn(2, 3, 4, 32, 32))
    assert list(maps) == ["class_reg.0", "class_reg.1", "class_reg.2", "class_reg.3"]
    for volume in maps.values():
        assert volume.shape == (2, 4, 32, 32) and volume.min() >= 0 and volume.max() <= 1
    with pytest.raises(ValueError, match="no Class Regularisation"):
        class_reg_maps(create_model("r3d_18", 3), torch.randn(1, 3, 4, 32, 32))
