"""``evaluate`` runs the registered evaluation attacks, and its sanity checks follow from each
attack's registered properties (ceiling, randomised, white- or black-box), on a smallcnn trained
on real Fashion-MNIST."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from test_attacks import EPS, one_thread, trained_smallcnn  # noqa: F401 (fixture)
from torch import Tensor, nn

from phaseguard.attacks import (
    PGD,
    Ceiling,
    EvalAttack,
    EvalTask,
    build_attack,
    eval_attack,
    list_eval_attacks,
)
from phaseguard.errors import ConfigError
from phaseguard.evaluation import evaluate, sanity_checks
from phaseguard.predict import predict_correct

BLACK_BOX_CHECK = "black-box attack finds nothing the white-box ones missed"


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, Tensor, Tensor]:
    """The shared trained smallcnn (a copy) and its first 100 test images in [0, 1]."""
    model, x, y = trained_smallcnn()
    return copy.deepcopy(model), x[:100], y[:100]


def deterministic_pgd(steps: int) -> EvalAttack:
    """PGD without a random start, ``steps`` steps of eps/4: an attack with no randomness."""

    def run(task: EvalTask) -> Tensor:
        attack = PGD(task.model, task.eps, task.eps / 4, steps, random_start=False)
        return predict_correct(task.model, task.x, task.y, attack=attack)

    return EvalAttack(f"PGD-{steps}", run, "white-box", randomized=False)


def uniform_noise(task: EvalTask) -> Tensor:
    """A black-box attack: uniform noise in the linf ball, scored without any gradient."""

    def noise(x: Tensor, y: Tensor) -> Tensor:
        return (x + torch.empty_like(x).uniform_(-task.eps, task.eps)).clamp(0, 1)

    return predict_correct(task.model, task.x, task.y, attack=noise)


def run_all(entries: dict[str, EvalAttack], task: EvalTask) -> dict[str, Tensor]:
    correct = {}
    for name, entry in entries.items():
        torch.manual_seed(0)
        correct[name] = entry.run(task)
    return correct


def check(checks: list, name: str):
    (found,) = [c for c in checks if c.name == name]
    return found


def test_evaluate_runs_the_registry_entries_with_the_same_seeding(trained) -> None:
    model, x, y = trained
    report = evaluate(model, x, y, ["natural", "pgd20", "pgd100"], eps=EPS)
    assert list(report.attacks) == ["natural", "pgd20", "pgd100"]
    for name in ("pgd20", "pgd100"):
        torch.manual_seed(0)
        attack = build_attack(name, model, eps=EPS)
        alone = predict_correct(model, x, y, attack=attack)
        assert report.attacks[name].correct == int(alone.sum())
    assert report.attacks["natural"].correct == int(predict_correct(model, x, y).sum())
    assert [c.name for c in report.sanity] == [
        "pgd20 <= clean",
        "pgd100 <= clean",
        "attack at eps=0 equals clean",
        "more PGD steps do not help the model",
        "input gradients are non-zero",
    ]
    a100, a20 = report.attacks["pgd100"].correct, report.attacks["pgd20"].correct
    steps = check(report.sanity, "more PGD steps do not help the model")
    # both randomised: 0.5% of the images (at least one) may go either way
    assert steps.detail == f"PGD-100 {a100} vs PGD-20 {a20} correct (random starts: 1 allowed)"
    assert steps.passed == (a100 <= a20 + 1)


def test_the_ceiling_check_needs_both_attacks(trained) -> None:
    model, x, y = trained
    report = evaluate(model, x[:20], y[:20], ["pgd100"], eps=EPS)
    assert "more PGD steps do not help the model" not in [c.name for c in report.sanity]


def test_unknown_attack_is_refused_before_anything_runs(trained) -> None:
    model, x, y = trained
    with pytest.raises(ConfigError) as info:
        evaluate(model, x, y, ["natural", "pgd7"], eps=EPS)
    assert str(info.value) == (
        f"unknown attack 'pgd7'; known attacks: {', '.join(list_eval_attacks())}"
    )


def test_a_beaten_ceiling_between_deterministic_attacks_fails_without_slack(trained) -> None:
    model, x, y = trained
    weak = dataclasses.replace(
        deterministic_pgd(1), ceiling=Ceiling("strong", "one step is as strong as ten")
    )
    entries = {"weak": weak, "strong": deterministic_pgd(10)}
    correct = run_all(entries, EvalTask(model, x, y, EPS))
    checks = sanity_checks(model, x, y, correct, entries)
    one, ten = int(correct["weak"].sum()), int(correct["strong"].sum())
    assert one > ten  # one step of eps/4 leaves more images correct than ten
    ceiling = check(checks, "one step is as strong as ten")
    assert ceiling.detail == f"PGD-1 {one} vs PGD-10 {ten} correct" and not ceiling.passed


def test_a_black_box_entry_is_checked_against_the_white_box_ones(trained) -> None:
    model, x, y = trained
    noise = EvalAttack("Noise", uniform_noise, "black-box", randomized=True)
    entries = {"natural": eval_attack("natural"), "fgsm": eval_attack("fgsm"), "noise": noise}
    correct = run_all(entries, EvalTask(model, x, y, EPS))
    broken = int((~correct["noise"] & correct["fgsm"]).sum())
    black_box = check(sanity_checks(model, x, y, correct, entries), BLACK_BOX_CHECK)
    assert black_box.detail.startswith(f"Noise broke {broken} images that FGSM left correct")
    assert black_box.passed == (broken == 0)
    # the same attack declared white-box: nothing to compare it with
    entries["noise"] = dataclasses.replace(noise, access="white-box")
    checks = sanity_checks(model, x, y, correct, entries)
    assert BLACK_BOX_CHECK not in [c.name for c in checks]
    assert "noise <= clean" in [c.name for c in checks]


def test_autoattack_black_box_attacks_are_checked_from_its_breakdown(trained) -> None:
    model, x, y = trained
    entries = {"natural": eval_attack("natural")}
    correct = run_all(entries, EvalTask(model, x, y, EPS))
    masked = check(
        sanity_checks(model, x, y, correct, entries, {"apgd-ce": 30, "square": 2}),
        BLACK_BOX_CHECK,
    )
    assert not masked.passed
    assert masked.detail == "Square broke 2 images that APGD/FAB left correct (gradient masking?)"
    fine = check(sanity_checks(model, x, y, correct, entries, {"apgd-ce": 30}), BLACK_BOX_CHECK)
    assert fine.passed and fine.detail == "Square broke 0 images that APGD/FAB left correct"


def test_autoattack_entry_keeps_its_state_file_custom_attacks_and_breakdown(
    trained, tmp_path: Path
) -> None:
    pytest.importorskip("pyautoattack", reason="pyautoattack (the official AutoAttack) missing")
    model, x, y = trained
    x, y = x[:24], y[:24]
    state = tmp_path / "aa.json"
    options = {"eps": EPS, "aa_state": state, "aa_attacks": ["apgd-ce", "square"]}
    report = evaluate(model, x, y, ["natural", "aa"], **options)
    assert state.is_file() and "apgd-ce" in report.autoattack_breakdown
    aa, clean = report.attacks["aa"].correct, report.attacks["natural"].correct
    assert sum(report.autoattack_breakdown.values()) == clean - aa  # each broken image once
    assert report.robustbench()["autoattack_acc"] == round(100 * aa / len(y), 2)
    square = check(report.sanity, BLACK_BOX_CHECK)
    assert square.detail.startswith(f"Square broke {report.autoattack_breakdown.get('square', 0)} ")
    again = evaluate(model, x, y, ["aa"], **options)  # resumed from the finished state file
    assert again.attacks["aa"].correct == aa and again.autoattack_breakdown == (
        report.autoattack_breakdown
    )
