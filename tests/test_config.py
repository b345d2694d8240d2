"""Configuration: presets and YAML files, typed overrides, unknown keys named."""

from pathlib import Path

import pytest
import yaml

from phaseguard.config import (
    PRESETS_DIR,
    AttackConfig,
    Config,
    OptimConfig,
    TrainConfig,
    config_from_dict,
    load_config,
    load_yaml,
    preset_names,
    resolve_config,
)
from phaseguard.errors import ConfigError
from phaseguard.methods import method_options
from phaseguard.study import load_study, resolve_study, study_preset_names

PRESETS = preset_names()
STUDIES = study_preset_names()


def test_the_shipped_presets_are_found():
    assert {"quick", "small/fashion_mnist_dat", "paper/cifar10_resnet18_dat"} <= set(PRESETS)
    assert len(PRESETS) == len(list(PRESETS_DIR.rglob("*.yaml"))) - len(STUDIES)
    assert STUDIES == ["full", "small"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_by_name_and_its_method_options_validate(name):
    cfg = load_config(name)
    assert cfg == load_config(PRESETS_DIR / f"{name}.yaml")
    method_options(cfg.method)


def test_the_quick_preset_is_the_small_dat_protocol_on_10k_images():
    quick, small = load_config("quick"), load_config("small/fashion_mnist_dat")
    assert quick.data.train_size == 10_000 and small.data.train_size == 12_000
    assert quick.method["name"] == "dat" and quick.model == small.model


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_preset_loads_and_its_runs_method_options_validate(name):
    spec = load_study(resolve_study(preset=name))
    assert spec.runs
    for run in spec.runs:
        method_options(run.load().method)


def test_a_users_file_bases_on_a_preset_by_name_or_on_a_file_by_relative_path(tmp_path):
    (tmp_path / "sub").mkdir()
    mine = tmp_path / "sub" / "mine.yml"
    mine.write_text("base: quick\ntrain:\n  epochs: 2\n")
    cfg = load_config(mine)
    assert cfg.train.epochs == 2 and cfg.data.train_size == 10_000
    assert cfg.method == load_config("quick").method
    child = tmp_path / "child.yaml"
    child.write_text("base: sub/mine.yml\ndata:\n  train_size: 512\n")
    cfg = load_config(str(child))
    assert cfg.train.epochs == 2 and cfg.data.train_size == 512


def test_a_string_is_a_file_when_it_ends_in_yaml_or_exists_else_a_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("quick") == PRESETS_DIR / "quick.yaml"
    assert resolve_config("paper/cifar10_resnet18_dat") == PRESETS_DIR / "paper" / (
        "cifar10_resnet18_dat.yaml"
    )
    assert resolve_config("quick.yaml") == Path("quick.yaml")  # a file, even if missing
    Path("quick").write_text(yaml.safe_dump({"train": {"epochs": 4}}))
    assert resolve_config("quick") == Path("quick")  # an existing file wins over the preset
    assert load_config("quick").train.epochs == 4
    with pytest.raises(ConfigError, match="cannot read config quick.yaml"):
        load_config("quick.yaml")


def test_an_unknown_preset_is_one_line_listing_the_presets(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config("quik")
    message = str(info.value)
    assert "'quik' is neither a config file nor a preset" in message and "\n" not in message
    assert all(name in message for name in PRESETS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: no_such_preset\n")
    with pytest.raises(ConfigError, match="'no_such_preset' is neither"):
        load_config(bad)
    bad.write_text("base: [quick]\n")
    with pytest.raises(ConfigError, match="base must be a preset name or a file"):
        load_config(bad)
    with pytest.raises(ConfigError, match="'study/small' is neither"):  # not a training config
        load_config("study/small")


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


def test_sections_check_their_values_for_python_callers_too():
    """Building a section in Python runs the same checks as a config file: one ConfigError
    naming the dotted key and the value; the edges that mean something stay valid."""
    with pytest.raises(ConfigError, match=r"attack.eps=-0.5 must be a number in \[0, 1\]"):
        AttackConfig(eps=-0.5)
    with pytest.raises(ConfigError, match="train.batch_size=0 must be at least 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match="optim.lr=nan must be a finite number >= 0"):
        OptimConfig(lr=float("nan"))
    assert AttackConfig(eps=0).eps == 0 and AttackConfig(norm="l2", eps=3.0).eps == 3.0
    assert OptimConfig(lr=0, weight_decay=0).lr == 0


def test_load_yaml_bounds_alias_expansion_and_keeps_plain_anchors():
    """load_yaml keeps a few anchors and aliases (they are valid YAML), and refuses a document
    whose aliases expand past MAX_CONFIG_VALUES, in one line naming what was read."""
    tree = load_yaml("a: &m [1, 2]\nb: *m\n", "config x.yaml")
    assert tree == {"a": [1, 2], "b": [1, 2]}
    levels = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcd", "bcde")
    ]  # 10**5 ones, just over the bound
    with pytest.raises(ConfigError, match="config x.yaml: its aliases expand to more than") as e:
        load_yaml("\n".join(levels), "config x.yaml")
    assert "\n" not in str(e.value)
