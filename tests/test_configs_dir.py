"""Every shipped config in configs/ validates, names a registered model and only options it takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kinetoscope.config import load_config
from kinetoscope.models import list_models, model_options

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.model.name in list_models()
    accepted = model_options(cfg.model.name)
    assert set(cfg.model.options) <= set(accepted), set(cfg.model.options) - set(accepted)


def test_there_are_configs_for_both_temporal_shape_families_and_the_pain_models():
    names = {p.stem for p in CONFIGS}
    assert {"temporal_shapes_cnn3d", "temporal_shapes_convlstm"} <= names
    assert any(n.startswith("pain_") for n in names)
