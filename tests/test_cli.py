"""The command line as a user meets it: help, eval, export, report, data, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from phaseguard.checkpoint import load_checkpoint
from phaseguard.loading import export_safetensors, load_model
from tests.conftest import TINY


def phaseguard(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "phaseguard", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phaseguard: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_the_commands():
    proc = phaseguard("--help")
    assert proc.returncode == 0
    for command in ("train", "eval", "report", "data", "export", "config", "list"):
        assert command in proc.stdout


def test_version_is_the_packages():
    import phaseguard as package

    proc = phaseguard("--version")
    assert proc.returncode == 0 and proc.stdout == f"phaseguard {package.__version__}\n"


def test_train_help_names_the_presets_and_every_config_section_with_its_keys():
    import dataclasses

    from phaseguard.config import Config

    proc = phaseguard("train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    assert "phaseguard list presets" in text and "phaseguard config show CONFIG" in text
    for section in dataclasses.fields(Config):
        assert f" {section.name}: " in text
    assert "train: epochs, batch_size, precision" in text and "attack: norm, eps, step" in text


def test_config_show_prints_the_resolved_preset_with_overrides():
    from phaseguard.config import load_config

    proc = phaseguard("config", "show", "quick", "train.epochs=2", "attack.eps=8/255")
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown == load_config("quick", ["train.epochs=2", "attack.eps=8/255"]).to_dict()
    assert shown["train"]["epochs"] == 2 and shown["imports"] == []


def test_presets_and_studies_are_listed_and_an_unknown_preset_is_one_line(tmp_path):
    from phaseguard.config import preset_names

    presets = phaseguard("list", "presets").stdout.split()
    assert presets == preset_names() and "quick" in presets
    assert phaseguard("list", "studies").stdout.split() == ["full", "small"]
    proc = phaseguard("train", "quik", "--out", tmp_path / "run")
    assert_one_line_error(proc, "'quik' is neither a config file nor a preset", *presets)
    assert not (tmp_path / "run").exists()


def test_eval_writes_json_table_and_robustbench_entry(tiny_run, tmp_path):
    run = tmp_path / "run"  # a copy: eval writes into the run's TensorBoard
    shutil.copytree(tiny_run, run)
    out = tmp_path / "eval.json"
    proc = phaseguard("eval", run, "--attacks", "natural,fgsm,pgd20,cw", "--n", "120", "--out", out)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    attacks = report["attacks"]
    assert list(attacks) == ["natural", "fgsm", "pgd20", "cw"]
    assert all(a["n"] == 120 and a["seconds"] >= 0 for a in attacks.values())
    worst = report["worst_case"]["correct"]
    assert worst <= min(a["correct"] for a in attacks.values())
    assert all(check["passed"] for check in report["sanity"]), report["sanity"]
    rb = report["robustbench"]
    assert rb["clean_acc"] == f"{100 * attacks['natural']['accuracy']:.2f}"
    assert rb["eps"] == "0.1" and report["norm"] == "linf"
    assert rb["dataset"] == "fashion-mnist" and rb["architecture"] == "smallcnn"
    assert "worst case" in proc.stdout and "[ok] attack at eps=0 equals clean" in proc.stdout
    # the run's TensorBoard holds the accuracies at the evaluated checkpoint's epoch
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    epoch = load_checkpoint(run / "checkpoints" / "best.pt")["epoch"]
    pgd20 = [(e.step, e.value) for e in events.Scalars("eval/pgd20")]
    assert (epoch, pytest.approx(attacks["pgd20"]["accuracy"])) in pgd20
    assert "eval/worst_case" in events.Tags()["scalars"]


def test_export_to_safetensors_gives_the_same_model(tiny_run, tmp_path):
    out = export_safetensors(tiny_run, tmp_path / "model.safetensors")
    original, exported = load_model(tiny_run).model, load_model(out).model
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), original(x))
    assert not exported.training


def test_report_renders_from_a_real_run(tiny_run, tmp_path):
    out = tmp_path / "report.html"
    proc = phaseguard("report", tiny_run, "--out", out, "--no-eps-curve")
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    assert "training curves" in page and (tmp_path / "report_curves.png").stat().st_size > 1000
    assert not (tiny_run / "eps_curve.json").exists()  # the shared run folder stays unchanged


def test_report_eps_curve_with_another_attack(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "report.html"
    proc = phaseguard("report", run, "--out", out, "--eps-n", "32", "--eps-attack", "fgsm")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "eps_curve.json").read_text())["attack"] == "fgsm"
    assert "<p>FGSM (seed 0) on the first n test images" in out.read_text()
    proc = phaseguard("report", run, "--out", out, "--eps-attack", "pgd7")
    assert_one_line_error(proc, "unknown attack 'pgd7'", "fgsm")


def test_data_info_and_list():
    proc = phaseguard("data", "info", "fashion-mnist")
    assert proc.returncode == 0
    assert "60000 train / 10000 test" in proc.stdout and "Ankle boot" in proc.stdout
    proc = phaseguard("list", "models")
    assert "resnet18" in proc.stdout.split() and "smallcnn" in proc.stdout.split()


def test_attack_lists_and_help_come_from_the_registry():
    from phaseguard.attacks import list_eval_attacks

    names = list_eval_attacks()
    assert phaseguard("list", "attacks").stdout.split() == names
    assert f"from {','.join(names)}" in phaseguard("eval", "--help").stdout


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    from tests.conftest import tiny_config

    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(tiny_config().to_yaml())
    return path


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["model.name=nosuchnet"], ["nosuchnet", "resnet18"]),
        (["data.name=cifar10", "data.root=/nonexistent/cifar"], ["/nonexistent/cifar"]),
        (["train.epoch=3"], ["unknown config key 'train.epoch'"]),
        (["method.name=dat", "method.gamma=1"], ["unknown config key 'method.gamma'"]),
        (["train.precision=fp16", "train.device=cpu"], ["fp16 needs CUDA"]),
    ],
)
def test_bad_training_input_is_one_line(tmp_path, tiny_yaml, overrides, fragments):
    proc = phaseguard("train", tiny_yaml, "--out", tmp_path / "run", *overrides)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_config_and_existing_run_are_one_line(tmp_path, tiny_run):
    assert_one_line_error(
        phaseguard("train", tmp_path / "nope.yaml", "--out", tmp_path / "r"), "nope.yaml"
    )
    proc = phaseguard("train", tiny_run / "config.yaml", "--out", tiny_run)
    assert_one_line_error(proc, "already holds a run", "--resume")


def test_bad_checkpoints_are_one_line(tmp_path):
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(b"PK\x03\x04garbage")
    assert_one_line_error(phaseguard("eval", truncated), "truncated or not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    assert_one_line_error(phaseguard("eval", foreign), "not a phaseguard checkpoint")
    assert_one_line_error(phaseguard("eval", tmp_path / "missing"), "does not exist")
    assert_one_line_error(phaseguard("eval", tmp_path), "holds no checkpoint")


def test_unknown_attack_is_one_line(tiny_run):
    assert_one_line_error(phaseguard("eval", tiny_run, "--attacks", "pgd7"), "pgd7", "pgd20")


@pytest.mark.parametrize("command", ["eval", "analyze"])
@pytest.mark.parametrize("n", ["0", "-9990"])
def test_a_number_of_images_below_one_is_one_line(tiny_run, tmp_path, command, n):
    proc = phaseguard(command, tiny_run, "--n", n, "--out", tmp_path / "out.json")
    assert_one_line_error(proc, f"at least 1, got {n}")
    assert not (tmp_path / "out.json").exists()


def test_tiny_overrides_are_all_valid():
    from phaseguard.config import load_config

    load_config(None, TINY)
