"""``evaluate`` runs the registered evaluation attacks, and its sanity checks follow from each
attack's registered properties (ceiling, randomised, white- or black-box), on a smallcnn trained
on real Fashion-MNIST."""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import importlib.util
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch
from test_attacks import EPS, one_thread, trained_smallcnn  # noqa: F401 (fixture)
from torch import Tensor, nn

import phaseguard
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
from phaseguard.evaluation import AttackResult, EvalReport, evaluate, sanity_checks
from phaseguard.hardware import device_name
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


class _NaNLogits(torch.nn.Module):
    """A model whose weights went NaN: every logit is NaN (argmax would pick class 0)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * float("nan")


def test_a_model_with_nan_logits_scores_zero_and_fails_the_finite_check(trained) -> None:
    """NaN logits classify nothing (not the 10% argmax of NaN gives), and the sanity check
    that logits and input gradients are finite says so."""
    model, x, y = trained
    report = evaluate(_NaNLogits(model), x, y, ["natural", "pgd20"], eps=EPS)
    assert report.attacks["natural"].correct == 0 and report.attacks["pgd20"].correct == 0
    finite = check(report.sanity, "logits and input gradients are finite")
    assert not finite.passed and finite.detail.startswith("100.0% of images")
    assert check(report.sanity, "input gradients are non-zero").passed  # not counted twice


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
        "logits and input gradients are finite",
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
    lines: list[str] = []
    report = evaluate(model, x, y, ["natural", "aa"], **options, log=lines.append)
    assert state.is_file() and "apgd-ce" in report.autoattack_breakdown
    aa, clean = report.attacks["aa"].correct, report.attacks["natural"].correct
    assert sum(report.autoattack_breakdown.values()) == clean - aa  # each broken image once
    assert report.robustbench()["autoattack_acc"] == f"{100 * aa / len(y):.2f}"
    # a line per finished AutoAttack attack, then the entry's own line
    assert [line.split(":")[0] for line in lines] == [
        "natural",
        "AutoAttack apgd-ce",
        "AutoAttack square",
        "aa",
    ]
    assert lines[2].startswith(f"AutoAttack square: {100 * aa / len(y):.2f}% ({aa}/{len(y)}), ")
    square = check(report.sanity, BLACK_BOX_CHECK)
    assert square.detail.startswith(f"Square broke {report.autoattack_breakdown.get('square', 0)} ")
    again = evaluate(model, x, y, ["aa"], **options)  # resumed from the finished state file
    assert again.attacks["aa"].correct == aa and again.autoattack_breakdown == (
        report.autoattack_breakdown
    )


LINE = re.compile(r"^(\S+): (\d+\.\d\d)% \((\d+)/(\d+)\), (\d+\.\d) s$")


def test_log_gets_one_line_per_attack_and_the_report_its_environment(trained) -> None:
    model, x, y = trained
    lines: list[str] = []
    before = datetime.now().astimezone()
    report = evaluate(model, x[:40], y[:40], ["natural", "fgsm"], eps=EPS, log=lines.append)
    assert len(lines) == 2
    for line, (name, result) in zip(lines, report.attacks.items()):
        assert LINE.match(line).groups() == (
            name,
            f"{100 * result.accuracy:.2f}",
            str(result.correct),
            "40",
            f"{result.seconds:.1f}",
        )
    env = report.info["environment"]
    assert list(env) == ["phaseguard", "torch", "device", "date"]
    assert env["phaseguard"] == phaseguard.__version__ and env["torch"] == torch.__version__
    assert env["device"] == device_name(torch.device("cpu"))
    date = datetime.fromisoformat(env["date"])
    assert date.tzinfo is not None and before - timedelta(seconds=1) <= date <= before + (
        timedelta(minutes=5)
    )


def test_robustbench_entry_has_robustbench_fields_and_formats() -> None:
    results = {
        "natural": AttackResult(0.669, 669, 1000, 0.1),
        "aa": AttackResult(0.455, 455, 1000, 200.0),
    }
    info = {"architecture": "wrn34_10", "dataset": "cifar10"}
    entry = EvalReport(8 / 255, "linf", 1000, results, info=info).robustbench()
    assert entry == {
        "link": "",
        "name": "",
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": "cifar10",
        "venue": "",
        "architecture": "WideResNet-34-10",
        "eps": "8/255",
        "clean_acc": "66.90",
        "reported": "",
        "autoattack_acc": "45.50",
        "footnote": "",
        "unreliable": False,
    }
    assert list(entry) == list(json.loads(json.dumps(entry)))  # RobustBench's key order kept
    # eps that is not k/255, an unknown architecture, no AutoAttack run
    partial = EvalReport(0.1, "linf", 500, {"natural": results["natural"]}, info={})
    entry = partial.robustbench()
    assert (entry["eps"], entry["autoattack_acc"], entry["architecture"]) == ("0.1", "", "")
    assert EvalReport(0.5, "l2", 1).robustbench()["eps"] == "0.5"


def test_a_device_other_than_the_models_is_refused(trained) -> None:
    model, x, y = trained
    other = "meta"  # never the device of a model that computes
    with pytest.raises(ConfigError) as info:
        evaluate(model, x, y, ["natural"], device=other)
    assert str(info.value) == (
        "the model is on cpu, not on the requested device meta; models are never moved: "
        "move it yourself (model.to('meta')) or leave the device unset"
    )
    assert next(model.parameters()).device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_runs_on_the_models_device_and_never_moves_it(trained) -> None:
    model, x, y = trained
    on_gpu = copy.deepcopy(model).cuda()
    uint8 = (x * 255).round().to(torch.uint8)  # images stay on the CPU, as the CLI loads them
    gpu = evaluate(on_gpu, uint8, y, ["natural", "pgd20"], eps=EPS)
    assert all(p.is_cuda for p in on_gpu.parameters())
    assert gpu.info["environment"]["device"] == torch.cuda.get_device_name()
    assert all(check.passed for check in gpu.sanity), gpu.sanity
    cpu = evaluate(model, uint8, y, ["natural", "pgd20"], eps=EPS)
    # GPU kernels round differently (TF32 convolutions) and draw other random starts
    assert abs(gpu.attacks["natural"].correct - cpu.attacks["natural"].correct) <= 1
    assert abs(gpu.attacks["pgd20"].correct - cpu.attacks["pgd20"].correct) <= 5
    if importlib.util.find_spec("pyautoattack") is not None:
        aa = evaluate(
            on_gpu, uint8[:24], y[:24], ["natural", "aa"], eps=EPS, aa_attacks=["apgd-ce"]
        )
        assert aa.attacks["aa"].correct < aa.attacks["natural"].correct
        assert all(p.is_cuda for p in on_gpu.parameters())


def phaseguard_eval(run: Path, *args: str, terminal: bool) -> tuple[int, str]:
    """``phaseguard eval RUN ARGS`` in a subprocess; its stderr is a pseudo-terminal or a pipe.
    Returns the exit status and everything written to stderr."""
    command = [sys.executable, "-m", "phaseguard", "eval", str(run), *args]
    if not terminal:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        return proc.returncode, proc.stderr
    parent, child = pty.openpty()
    # 120 columns: a terminal of 0 columns (a fresh pty's size) gets empty bars from tqdm
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    chunks = []
    while True:
        ready, _, _ = select.select([parent], [], [], 1.0)
        if ready:
            try:
                chunk = os.read(parent, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    os.close(parent)
    return proc.wait(timeout=600), b"".join(chunks).decode(errors="replace")


def test_cli_prints_a_line_per_attack_in_logs_and_bars_on_a_terminal(tiny_run, tmp_path) -> None:
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays untouched
    args = ["--attacks", "natural,fgsm", "--n", "64", "--batch-size", "16"]
    status, logged = phaseguard_eval(run, *args, terminal=False)
    assert status == 0, logged
    lines = logged.splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["natural", "fgsm"], logged
    assert "\r" not in logged and "%|" not in logged  # no bar in a log
    written = json.loads((run / "eval.json").read_text())
    assert written["attacks"]["fgsm"]["correct"] == int(LINE.match(lines[1]).group(3))
    assert written["robustbench"]["eps"] == "0.1" and "date" in written["info"]["environment"]

    status, shown = phaseguard_eval(run, *args, terminal=True)
    assert status == 0, shown
    # a bar per attack, redrawn in place, then the attack's line
    assert re.search(r"\rfgsm:\s+\d+%\|.*\| \d+/64 \[", shown), shown
    assert re.search(r"\rfgsm: \d+\.\d\d% \(\d+/64\), \d+\.\d s\r?\n", shown), shown
