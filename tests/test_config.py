"""Configuration: YAML files, typed overrides, unknown keys named."""

from pathlib import Path

import pytest

from phaseguard.config import Config, config_from_dict, load_config
from phaseguard.errors import ConfigError
from phaseguard.methods import method_options
from phaseguard.study import load_study

CONFIG_DIR = Path(__file__).parent.parent / "configs"
STUDY_DIR = CONFIG_DIR / "study"  # study files: another format, read by load_study
RUN_CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if STUDY_DIR not in p.parents)
STUDIES = sorted(STUDY_DIR.glob("*.yaml"))


def _name(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


def test_the_shipped_configs_are_found():
    expected = {"quick.yaml", "small/fashion_mnist_dat.yaml", "paper/cifar10_resnet18_dat.yaml"}
    assert expected <= {_name(p) for p in RUN_CONFIGS}
    assert {"small.yaml", "full.yaml"} <= {p.name for p in STUDIES}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=_name)
def test_every_shipped_config_loads_and_its_method_options_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    method_options(cfg.method)


@pytest.mark.parametrize("path", STUDIES, ids=_name)
def test_every_shipped_study_loads_and_its_runs_method_options_validate(path):
    spec = load_study(path)
    assert spec.runs
    for run in spec.runs:
        method_options(run.load().method)


def test_a_retired_key_of_an_earlier_run_config_is_ignored():
    tree = Config().to_dict()
    tree["eval"]["checkpoint"] = "best"  # in every config.yaml written before its removal
    assert config_from_dict(tree) == Config()


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
