"""``--import MODULE``: user code that registers a model, used through the CLI, recorded by the
run so that later commands on the run import it by themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from tests.conftest import TINY
from tests.test_cli import assert_one_line_error

MODULE = """
from torch import nn

from phaseguard.models import register_model


@register_model("tinynet")
def tinynet(num_classes, in_channels, width=4):
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(16 * width, num_classes),
    )
"""


def cli(*args, cwd, pythonpath=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [sys.executable, "-m", "phaseguard", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_a_user_model_trains_and_evaluates_through_the_cli(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "mymodels.py").write_text(MODULE)
    work = tmp_path / "work"  # neither the module's folder nor the repository
    work.mkdir()
    listed = cli("list", "models", "--import", "mymodels", cwd=work, pythonpath=code)
    assert "tinynet" in listed.stdout.split(), listed.stderr

    tiny = [o for o in TINY if not o.startswith(("model.", "train.epochs"))]
    overrides = [*tiny, "model.name=tinynet", "model.kwargs.width=2", "train.epochs=1"]
    preset = "small/fashion_mnist_pgd_at"
    proc = cli(
        "train",
        preset,
        "--import",
        "mymodels",
        *overrides,
        "--out",
        "run",
        cwd=work,
        pythonpath=code,
    )
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert config["imports"] == ["mymodels"] and config["model"]["name"] == "tinynet"

    proc = cli("eval", "run", "--attacks", "natural,pgd20", "--n", "64", cwd=work, pythonpath=code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((work / "run" / "eval.json").read_text())
    assert report["attacks"]["natural"]["n"] == 64
    assert report["robustbench"]["architecture"] == "tinynet"

    proc = cli("train", "--resume", "run", "train.epochs=2", cwd=work, pythonpath=code)
    assert proc.returncode == 0, proc.stderr
    assert len((work / "run" / "log.csv").read_text().splitlines()) == 1 + 2  # header, epochs

    # without the module on the path, the recorded import is the one line that says so
    assert_one_line_error(cli("eval", "run", cwd=work), "cannot import module 'mymodels'")
    checkpoint = work / "run" / "checkpoints" / "last.pt"
    assert_one_line_error(cli("export", checkpoint, "--out", "m.safetensors", cwd=work), "mymodels")


def test_a_module_that_cannot_be_imported_is_one_line(tmp_path):
    proc = cli("list", "models", "--import", "no_such_module_here", cwd=tmp_path)
    assert_one_line_error(proc, "cannot import module 'no_such_module_here'", "ModuleNotFound")
    (tmp_path / "broken.py").write_text("raise RuntimeError('half written\\nsecond line')\n")
    proc = cli("list", "models", "--import", "broken", cwd=tmp_path, pythonpath=tmp_path)
    assert_one_line_error(proc, "cannot import module 'broken'", "RuntimeError: half written")
