"""Config schemas: unknown keys and bad types are errors that name the key; overrides apply."""

from __future__ import annotations

import pytest

from kinetoscope.config import ConfigError, build_config, load_config, parse_override


def test_override_values_are_parsed_as_yaml():
    assert parse_override("model.hidden=16") == (["model", "hidden"], 16)
    assert parse_override("optim.lr=1e-3") == (["optim", "lr"], 1e-3)
    assert parse_override("train.strategy=ddp") == (["train", "strategy"], "ddp")


def test_overrides_reach_nested_keys_and_model_options(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: a\ndata: {root: /x}\nmodel: {name: cnn3d}\n")
    cfg = load_config(path, ["model.hidden=12", "train.max_epochs=3", "optim.name=adam"])
    assert cfg.model.options == {"hidden": 12}
    assert cfg.train.max_epochs == 3 and cfg.optim.name == "adam"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {root: /x, batchsize: 4}\n")
    with pytest.raises(ConfigError, match=r"data\.batchsize: unknown key") as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_bad_type_is_an_error_naming_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.max_epochs.*'many'"):
        build_config({"data": {"root": "/x"}}, ["train.max_epochs=many"])


def test_missing_required_key_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="data: required key is missing"):
        build_config({})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_model_option_typo_is_reported_with_the_valid_options():
    from kinetoscope.models import create_model

    with pytest.raises(ValueError, match="no option.*'hiden'.*hidden"):
        create_model("cnn3d", 5, 1, hiden=8)
    with pytest.raises(KeyError, match="unknown model 'convlstn'.*convlstm"):
        create_model("convlstn", 5)


def test_quoted_override_stays_a_string():
    assert parse_override("name='007'") == (["name"], "007")
    assert parse_override('optim.lr="1e-3"') == (["optim", "lr"], "1e-3")
    assert build_config({"data": {"root": "/x"}}, ["name='007'"]).name == "007"
