"""Configuration: YAML files, typed overrides, unknown keys named."""

from pathlib import Path

import pytest

from phaseguard.config import Config, load_config
from phaseguard.errors import ConfigError
from phaseguard.methods import method_options

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_its_method_options_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    method_options(cfg.method)


def test_overrides_are_typed_and_accept_fractions(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\nmodel:\n  name: smallcnn\n")
    cfg = load_config(
        path,
        [
            "train.epochs=7",
            "attack.eps=8/255",
            "optim.lr=1",
            "model.kwargs.width=16",
            "eval.attacks=[natural,pgd20]",
            "data.root=null",
        ],
    )
    assert cfg.train.epochs == 7
    assert cfg.attack.eps == pytest.approx(8 / 255)
    assert isinstance(cfg.optim.lr, float) and cfg.optim.lr == 1.0
    assert cfg.model.kwargs == {"width": 16}
    assert cfg.eval.attacks == ["natural", "pgd20"]
    assert cfg.model.name == "smallcnn"


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(None, ["train.seed=3", "method.name=trades", "method.beta=2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("nosuch.key=1", "unknown config key 'nosuch'"),
        ("train.epochs=three", "train.epochs: expected an integer"),
        ("train.precision=fp8", "train.precision: 'fp8' is not one of"),
        ("attack.eps=[1]", "attack.eps: expected a number"),
        ("train.epochs", "not of the form section.key=value"),
    ],
)
def test_bad_keys_and_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_method_options_are_checked_against_the_method():
    assert method_options({"name": "trades", "beta": 3}).beta == 3.0
    with pytest.raises(ConfigError, match="unknown config key 'method.gamma'"):
        method_options({"name": "trades", "gamma": 1})
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        method_options({"name": "nope"})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
