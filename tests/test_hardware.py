"""Speed settings chosen from the hardware: the bf16 probe and its forced answers, what auto
resolves to on CPU and CUDA, a run keeping its resolved values on resume, threads from the cores
the process may use, and train.compile reaching the attacks."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys

import pytest
import torch

from phaseguard.checkpoint import load_checkpoint
from phaseguard.cli import main
from phaseguard.config import load_config
from phaseguard.errors import ConfigError
from phaseguard.hardware import NATIVE_BF16_ENV, cgroup_cpu_limit, native_bf16
from phaseguard.models import create_model
from phaseguard.training import Trainer, train
from phaseguard.training.precision import resolve_channels_last, resolve_precision
from tests.conftest import tiny_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# 2 steps of 64 images per epoch: cheap even where bf16 is emulated (10x slower than fp32)
SMALL = ["data.train_size=128", "train.epochs=1"]


@pytest.mark.parametrize(
    ("native", "device", "precision", "channels_last"),
    [
        (True, CPU, "bf16", True),
        (False, CPU, "fp32", True),
        (True, CUDA, "bf16", True),
        (False, CUDA, "fp16", True),  # T4/V100: fp16 with the gradient scaler
    ],
)
def test_auto_resolves_from_the_probe(monkeypatch, native, device, precision, channels_last):
    monkeypatch.setenv(NATIVE_BF16_ENV, "1" if native else "0")
    assert native_bf16(device) is native
    resolved = resolve_precision("auto", device)
    assert resolved.value == precision
    wide = create_model("resnet18", 10, 3)
    assert resolve_channels_last("auto", device, resolved.value, wide).value is channels_last
    for explicit in ("fp32", "bf16"):  # an explicit choice is kept whatever the probe says
        assert resolve_precision(explicit, device).value == explicit
    assert resolve_channels_last(False, device, precision, wide).value is False


@pytest.mark.parametrize(("width", "channels_last"), [(8, False), (16, True), (32, True)])
def test_cpu_layout_follows_the_narrowest_convolution(width, channels_last) -> None:
    """Measured: the small net at width 8 is no faster in channels_last, at 16 and 32 it is."""
    net = create_model("smallcnn", 10, 1, width=width)
    for precision in ("fp32", "bf16"):
        assert resolve_channels_last("auto", CPU, precision, net).value is channels_last
    assert resolve_channels_last("auto", CPU, "fp32", torch.nn.Linear(2, 2)).value is False


def test_fp16_on_cpu_and_a_bad_forced_probe_are_errors(monkeypatch) -> None:
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_precision("fp16", CPU)
    monkeypatch.setenv(NATIVE_BF16_ENV, "maybe")
    with pytest.raises(ConfigError, match=NATIVE_BF16_ENV):
        native_bf16(CPU)


def test_a_cpu_limited_to_avx2_has_no_native_bf16() -> None:
    """oneDNN limited to AVX2 (what an AMD EPYC Zen 3 or a laptop has) is no bf16 machine."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("oneDNN's ISA limit is an x86 setting")
    probe = "import torch, phaseguard.hardware as h; print(h.native_bf16(torch.device('cpu')))"
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr


def _train_cli(capsys, *args: str) -> tuple[str, str]:
    assert main(["train", *args]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_a_run_writes_and_keeps_its_resolved_precision(tmp_path, monkeypatch, capsys) -> None:
    """Started where bf16 is native, resumed where it is not: the run stays bf16 (with one
    warning line) and ends with the weights of an uninterrupted bf16 run."""
    config = tmp_path / "tiny.yaml"  # a constant lr: the schedule does not depend on epochs
    config.write_text(tiny_config(*SMALL, "schedule.name=piecewise").to_yaml())
    monkeypatch.setenv(NATIVE_BF16_ENV, "1")
    straight, split = tmp_path / "straight", tmp_path / "split"
    out, _ = _train_cli(capsys, str(config), "--out", str(straight), "train.epochs=2")
    assert out.splitlines()[0].startswith("cpu (")
    assert "precision bf16 (native bf16 on this CPU)" in out.splitlines()[0]
    _train_cli(capsys, str(config), "--out", str(split))
    written = load_config(split / "config.yaml")
    assert (written.train.precision, written.train.channels_last) == ("bf16", False)

    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    out, err = _train_cli(capsys, "--resume", str(split), "train.epochs=2")
    assert "precision bf16" in out.splitlines()[0]
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "without native bf16" in warnings[0], err
    assert load_config(split / "config.yaml").train.precision == "bf16"
    a = load_checkpoint(straight / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # from Python, a config that still says auto resumes with the run's resolved values too
    train(tiny_config(*SMALL, "train.epochs=3"), split, resume=True)
    assert load_config(split / "config.yaml").train.precision == "bf16"


def test_auto_without_native_bf16_trains_in_fp32(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv(NATIVE_BF16_ENV, "0")
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(*SMALL).to_yaml())
    out, err = _train_cli(capsys, str(config), "--out", str(tmp_path / "run"))
    assert "precision fp32 (no native bf16 on this CPU)" in out.splitlines()[0]
    assert "channels_last off (convolutions of 8 channels" in out.splitlines()[0]
    assert "warning" not in err
    written = load_config(tmp_path / "run" / "config.yaml")
    assert (written.train.precision, written.train.channels_last) == ("fp32", False)
    # a wider net gets channels_last from auto
    _train_cli(capsys, str(config), "--out", str(tmp_path / "wide"), "model.kwargs.width=16")
    assert load_config(tmp_path / "wide" / "config.yaml").train.channels_last is True


def test_cgroup_quota_caps_the_usable_cores(tmp_path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1" / "cpu,cpuacct"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1") == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "v1") is None


_THREADS = (
    "import torch; from phaseguard.hardware import configure_threads as c; "
    "torch.set_num_threads(4); print(c(), '|', torch.get_num_threads())"
)


def _threads(*prefix: str, **env: str) -> tuple[str, int]:
    """What configure_threads says and sets in a fresh process whose torch starts at 4."""
    out = subprocess.run(
        [*prefix, sys.executable, "-c", _THREADS],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    said, _, count = out.stdout.rpartition("|")
    assert count.strip(), out.stderr
    return said.strip(), int(count)


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset")
def test_threads_follow_the_cores_the_process_may_use() -> None:
    assert _threads("taskset", "-c", "0") == ("1 threads (1 usable cores)", 1)
    said, count = _threads(OMP_NUM_THREADS="3")  # the user's own choice is left alone
    assert said.endswith("(OMP_NUM_THREADS)") and count == 4


def test_train_threads_overrides_and_must_be_positive(tmp_path) -> None:
    trainer = Trainer(tiny_config("train.threads=1"), tmp_path / "one")
    assert torch.get_num_threads() == 1 and "1 threads (train.threads)" in trainer.setup_line
    with pytest.raises(ConfigError, match="train.threads=0 must be at least 1"):
        Trainer(tiny_config("train.threads=0"), tmp_path / "zero")


def test_compile_reaches_the_attacks_and_trains_like_eager(tmp_path) -> None:
    """The network the training attack calls is the compiled one; aot_eager (dynamo and
    autograd tracing, no code generation) ends near the eager run's weights."""
    eager = tmp_path / "eager"
    train(tiny_config(*SMALL), eager)
    trainer = Trainer(tiny_config(*SMALL, "train.compile=aot_eager"), tmp_path / "compiled")
    assert trainer.step.method.attack.model is trainer.compiled is not trainer.model
    trainer.fit()
    a = load_checkpoint(eager / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=1e-4)
    with pytest.raises(ConfigError, match="not a torch.compile backend"):
        Trainer(tiny_config("train.compile=no_such_backend"), tmp_path / "bad")
