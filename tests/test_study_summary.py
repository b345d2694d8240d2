"""A study's summary has one column per evaluation attack of the study, labelled from the attack
registry; a study naming an unknown attack is refused when it is loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from phaseguard.errors import ConfigError
from phaseguard.runs import evaluate_run
from phaseguard.study import load_study
from phaseguard.study_summary import PHASE_COLUMNS, summarize, summary_markdown
from tests.conftest import TINY


def write_study(folder: Path, attacks: list[str]) -> Path:
    """A one-run study of the tiny PGD-AT config, evaluated with ``attacks``."""
    (folder / "pgd.yaml").write_text(yaml.safe_dump({"method": {"name": "pgd_at"}}))
    spec = {
        "methods": {"pgd_at": "pgd.yaml"},
        "seeds": [0],
        "overrides": [o for o in TINY if not o.startswith("method.")],
        "eval": {"attacks": attacks, "n": 40},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_summary_columns_follow_the_studys_attacks(tiny_run: Path, tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, ["natural", "fgsm", "pgd100"]))
    run = tmp_path / "out" / "runs" / "pgd_at_s0"
    shutil.copytree(tiny_run, run)  # the tiny run stands in for the study's trained run
    report, _ = evaluate_run(run, attacks=spec.eval_attacks, n=spec.eval_n)
    table = summary_markdown(summarize(spec, tmp_path / "out")).splitlines()
    phase = " | ".join(label for _, label in PHASE_COLUMNS)
    assert table[0] == f"| | Natural | FGSM | PGD-100 | {phase} | train min/run |"
    cells = table[2].split(" | ")[1:4]
    assert cells == [f"{100 * report.attacks[a].accuracy:.2f}" for a in spec.eval_attacks]


def test_a_study_with_an_unknown_attack_is_refused_when_loaded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown attack 'pgd7'; known attacks: natural, fgsm"):
        load_study(write_study(tmp_path, ["natural", "pgd7"]))


def test_a_study_without_eval_attacks_gets_the_papers_columns(tmp_path: Path) -> None:
    path = write_study(tmp_path, [])
    tree = yaml.safe_load(path.read_text())
    del tree["eval"]["attacks"]
    path.write_text(yaml.safe_dump(tree))
    assert load_study(path).eval_attacks == ["natural", "pgd20", "cw", "aa"]
