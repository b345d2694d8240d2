"""The report's eps curve with a selectable evaluation attack, on a real tiny run: computed as
``evaluate`` would, cached with its attack, recomputed when another attack is asked for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from phaseguard.attacks import build_attack, list_eval_attacks
from phaseguard.data import load_dataset
from phaseguard.errors import ConfigError
from phaseguard.loading import load_model
from phaseguard.predict import predict_correct
from phaseguard.report.eps_curve import plot_eps_curves, run_eps_curve
from phaseguard.run_dir import RunDir

N = 48
MULTIPLES = (0.0, 1.0)


@pytest.fixture()
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the shared tiny run, free to receive an eps_curve.json."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def direct_counts(run: Path, attack: str) -> list[int]:
    """What the curve must hold: the image attack at each radius, seeded with 0 before each."""
    loaded = load_model(run)
    data = load_dataset(loaded.config.data.name, loaded.config.data.root)
    x, y = data.x_test[:N], data.y_test[:N]
    counts = []
    for m in MULTIPLES:
        torch.manual_seed(0)
        adversary = build_attack(attack, loaded.model, eps=m * loaded.config.attack.eps)
        counts.append(int(predict_correct(loaded.model, x, y, attack=adversary).sum()))
    return counts


def test_the_curve_runs_the_attack_it_is_given_and_caches_it(run: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    curve = run_eps_curve(run, N, MULTIPLES, attack="fgsm", log=lines.append)
    cached = json.loads(RunDir(run).eps_curve_json.read_text())
    assert curve.attack == cached["attack"] == "fgsm"
    assert curve.correct == cached["correct"] == direct_counts(run, "fgsm")
    assert lines == [f"{run}: FGSM at 2 eps on {N} test images ..."]
    # the same attack again: reused; another one: recomputed and recorded
    assert run_eps_curve(run, N, MULTIPLES, attack="fgsm", log=lines.append) == curve
    assert lines[-1] == f"{run}: eps curve reused from {RunDir(run).eps_curve_json}"
    pgd = run_eps_curve(run, N, MULTIPLES, log=lines.append)
    assert lines[-1] == f"{run}: PGD-20 at 2 eps on {N} test images ..."
    assert pgd.attack == json.loads(RunDir(run).eps_curve_json.read_text())["attack"] == "pgd20"
    assert pgd.correct == direct_counts(run, "pgd20")
    png = plot_eps_curves({"fgsm": curve, "pgd20": pgd}, tmp_path / "eps.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_natural_curve_is_flat_at_the_clean_count(run: Path) -> None:
    curve = run_eps_curve(run, N, (0.0, 0.5, 1.5), attack="natural")
    clean = direct_counts(run, "pgd20")[0]  # PGD at radius 0 changes nothing
    assert curve.correct == [clean, clean, clean]


def test_an_unknown_attack_is_refused_before_anything_is_computed(run: Path) -> None:
    with pytest.raises(ConfigError, match=f"known attacks: {', '.join(list_eval_attacks())}"):
        run_eps_curve(run, N, attack="pgd7")
    assert not RunDir(run).eps_curve_json.exists()
