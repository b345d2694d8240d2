"""One registry pattern: models, methods, attacks, evaluation attacks and datasets refuse a
duplicate name and answer an unknown one with one error that names the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from phaseguard.attacks import (
    build_attack,
    eval_attack,
    list_attacks,
    list_eval_attacks,
    register_eval_attack,
)
from phaseguard.attacks.registry import ATTACKS
from phaseguard.data import download, list_datasets, load_dataset, register_dataset
from phaseguard.data.registry import downloadable_datasets
from phaseguard.errors import ConfigError, DataError, ModelError
from phaseguard.methods import list_methods, method_class, register_method
from phaseguard.methods.dat import DAT
from phaseguard.models import create_model, list_models, register_model
from phaseguard.registry import Registry


def test_registry_keeps_registration_order_and_returns_what_it_registers() -> None:
    widgets: Registry[int] = Registry("widget", ConfigError)

    @widgets.register("b")
    def b() -> int:
        return 2

    assert widgets.add("a", 1) == 1 and b() == 2  # the decorated function is unchanged
    assert widgets.names() == ["b", "a"]
    assert widgets.get("a") == 1 and widgets.get("b") is b


def test_registry_refuses_a_duplicate_and_keeps_the_first() -> None:
    widgets: Registry[int] = Registry("widget", ConfigError)
    widgets.add("a", 1)
    with pytest.raises(ConfigError, match="^widget 'a' is already registered$"):
        widgets.add("a", 2)
    with pytest.raises(ConfigError, match="already registered"):
        widgets.register("a")(3)
    assert widgets.get("a") == 1 and widgets.names() == ["a"]


def test_registry_unknown_name_is_one_error_naming_the_known_ones() -> None:
    widgets: Registry[int] = Registry("widget", DataError)
    with pytest.raises(DataError, match="^unknown widget 'a'; known widgets: none$"):
        widgets.get("a")
    widgets.add("x", 1)
    widgets.add("y", 2)
    with pytest.raises(DataError, match="^unknown widget 'z'; known widgets: x, y$"):
        widgets.get("z")


class _Dat(DAT):
    """A replacement of DAT under DAT's own name."""


@pytest.mark.parametrize(
    ("register", "error", "message"),
    [
        (lambda: register_model("resnet18")(nn.Identity), ModelError, "model 'resnet18'"),
        (lambda: register_method(_Dat), ConfigError, "method 'dat'"),
        (lambda: ATTACKS.register("pgd20")(build_attack), ConfigError, "attack 'pgd20'"),
        (
            lambda: register_eval_attack("aa", eval_attack("natural")),
            ConfigError,
            "attack 'aa'",
        ),
        (lambda: register_dataset("cifar10", load_dataset), DataError, "dataset 'cifar10'"),
    ],
    ids=["model", "method", "attack", "eval attack", "dataset"],
)
def test_every_kind_refuses_a_duplicate_name(register, error, message) -> None:
    before = (list_models(), list_methods(), list_attacks(), list_eval_attacks(), list_datasets())
    with pytest.raises(error, match=f"^{message} is already registered$"):
        register()
    after = (list_models(), list_methods(), list_attacks(), list_eval_attacks(), list_datasets())
    assert after == before
    assert method_class("dat") is DAT


@pytest.mark.parametrize(
    ("lookup", "error", "kind", "known"),
    [
        (lambda: create_model("resnet19"), ModelError, "model", list_models),
        (lambda: method_class("pgd"), ConfigError, "method", list_methods),
        (lambda: build_attack("pgd7", nn.Identity()), ConfigError, "attack", list_attacks),
        (lambda: eval_attack("pgd7"), ConfigError, "attack", list_eval_attacks),
        (lambda: load_dataset("imagenet"), DataError, "dataset", list_datasets),
    ],
    ids=["model", "method", "attack", "eval attack", "dataset"],
)
def test_every_kind_names_its_known_entries_for_an_unknown_one(lookup, error, kind, known) -> None:
    with pytest.raises(error) as info:
        lookup()
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"unknown {kind} '")
    assert all(name in message.split("; ")[1] for name in known())


def test_built_in_entries_are_registered_in_protocol_order() -> None:
    assert list_eval_attacks() == ["natural", "fgsm", "pgd20", "pgd100", "cw", "aa"]
    assert list_attacks() == ["fgsm", "pgd20", "pgd100", "cw"]
    assert "dat" in list_methods() and "smallcnn" in list_models()
    assert list_datasets()[:3] == ["cifar10", "cifar100", "svhn"]


def test_download_sources_belong_to_the_dataset_entries(tmp_path: Path) -> None:
    assert downloadable_datasets() == ["cifar10", "cifar100", "svhn", "fashion-mnist"]
    with pytest.raises(DataError, match="cannot download 'npz'; downloadable datasets: cifar10"):
        download("npz", tmp_path)
    with pytest.raises(DataError, match="unknown dataset 'imagenet'; known datasets: cifar10"):
        download("imagenet", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing was created for a refused download
