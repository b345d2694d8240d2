"""Hostile runs: killed processes, concurrent writers, stale results. Each test states the promise
it checks; every run is a real tiny training or evaluation, every kill a real signal."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from phaseguard.checkpoint import load_checkpoint
from phaseguard.cli import main
from phaseguard.data import load_dataset
from phaseguard.evaluation import evaluate
from phaseguard.files import TMP_SUFFIX
from phaseguard.loading import load_model
from phaseguard.lock import LOCK_NAME
from phaseguard.training import train
from phaseguard.training.logger import read_log
from tests.conftest import tiny_config

KILL_AT = Path(__file__).with_name("kill_at.py")
PACKAGE = Path(__file__).resolve().parents[2] / "phaseguard"
ENV = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}


def _digests(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (temporaries, the lock and TensorBoard aside) -> its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
        and not p.name.endswith(TMP_SUFFIX)
        and p.name != LOCK_NAME
        and "tensorboard" not in p.parts
    }


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(f"*{TMP_SUFFIX}") if p.is_file()]


def _cli(*args: str, kill: tuple[str, str] | None = None) -> subprocess.Popen:
    head = [sys.executable, str(KILL_AT), *kill] if kill else [sys.executable, "-m", "phaseguard"]
    return subprocess.Popen(
        [*head, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        # SIGINT as from a terminal, also when pytest itself runs as a background job (a
        # shell starts those with SIGINT ignored, and the ignore is inherited)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phaseguard: error: "), err
    return err[0]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def test_killed_at_every_kind_of_write_and_at_random_moments_resumes_bit_identical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL just before each kind of training write is renamed into place (and while its
    bytes are written), SIGKILL at random moments, SIGTERM and SIGINT: after each, every
    file the process found is intact byte for byte or replaced whole; a second writer is
    refused while the run is live; the resumed run ends with the uninterrupted run's weights
    and one log row per epoch, and no temporary file is left."""
    cfg = tiny_config("train.epochs=5")  # room for a kill, SIGTERM and SIGINT in the middle
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.to_yaml())
    whole = train(cfg, tmp_path / "whole")  # the uninterrupted run
    out = tmp_path / "run"
    kills = [
        ("fsync", "best.pt"),  # epoch 1, before any checkpoint exists
        ("replace", "last.pt"),  # epoch 1: best.pt written, last.pt not
        ("replace", "log.csv"),  # the log rewritten at the start of a resume
        ("replace", "config.yaml"),  # after epoch 1's last.pt
        ("fsync", "last.pt"),  # epoch 2
    ]
    for i, kill in enumerate(kills):
        before = _digests(out) if out.exists() else {}
        args = ["train", "--resume", str(out)] if i else ["train", str(config), "--out", str(out)]
        proc = _cli(*args, kill=kill)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        after = _digests(out)
        target = f"checkpoints/{kill[1]}" if kill[1].endswith(".pt") else kill[1]
        assert after.get(target) == before.get(target), f"{kill}: {target} changed"
        assert _temporaries(out), f"{kill}: the killed write left no temporary file"

    # SIGKILL at random moments (setup, an epoch, a checkpoint write); the first time, while
    # the run is live, a second writer is refused in one line naming it
    for i, delay in enumerate(random.Random(0).uniform(0.1, 1.0) for _ in range(3)):
        proc = _cli("train", "--resume", str(out))
        lock = out / LOCK_NAME
        deadline = time.time() + 120
        while f'"pid": {proc.pid}' not in (lock.read_text() if lock.exists() else ""):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
            time.sleep(0.05)
        if i == 0:
            for second in (["train", "--resume", str(out)], ["eval", str(out)]):
                assert main(second) == 2
                line = _one_error_line(capsys)
                assert f"is in use by pid {proc.pid}" in line and "train --resume" in line
        time.sleep(delay)
        proc.kill()
        proc.communicate()
        if (out / "checkpoints" / "last.pt").exists():  # whole, whichever version
            assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1
        read_log(out / "log.csv")

    for signum in (signal.SIGTERM, signal.SIGINT):
        proc = _cli("train", "--resume", str(out))
        for line in proc.stdout:  # the setup line: the epoch (seconds) is under way
            if line.startswith("cpu"):
                break
        time.sleep(0.3)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
        name = signal.Signals(signum).name
        assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] < 5, "no epoch left"
        assert proc.returncode == 128 + signum, err
        assert err.strip().splitlines()[-1].startswith(f"phaseguard: stopped by {name} in epoch")
        assert f"continue with: phaseguard train --resume {out}" in err

    assert main(["train", "--resume", str(out)]) == 0  # the stale lock is taken over
    reference, resumed = _weights(whole.run_dir), _weights(out)
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)
    epochs = [row.split(",")[0] for row in (out / "log.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3", "4", "5"]
    assert not _temporaries(out)


def test_resume_then_eval_gives_the_new_models_autoattack(
    tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's flow (eval, train --resume with more epochs, eval again): the second
    AutoAttack result is the new model's, computed again, never the old state read back; a
    SIGKILL while the state, eval.json or analysis.json is renamed into place leaves the
    previous one."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    evaluation = ["eval", str(run), "--attacks", "natural,aa", "--aa-attacks", "apgd-ce"]
    evaluation += ["--n", "16", "--which", "last"]
    analysis = ["analyze", str(run), "--attack", "fgsm", "--n", "16", "--which", "last"]
    assert main(evaluation) == 0 and main(analysis) == 0
    first = json.loads((run / "eval.json").read_text())
    assert main(["train", "--resume", str(run), "train.epochs=4"]) == 0
    capsys.readouterr()

    for name, command in (
        ("eval.aa_state.json", evaluation),
        ("eval.json", evaluation),
        ("analysis.json", analysis),
    ):
        before = (run / name).read_bytes()
        proc = _cli(*command, kill=("replace", name))
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        assert (run / name).read_bytes() == before
        if name == "eval.aa_state.json":  # the epoch-3 state is not the new model's
            assert "written for another model_sha256; starting over" in err

    assert main(evaluation) == 0
    second = json.loads((run / "eval.json").read_text())
    assert second["info"]["epoch"] == 4 and first["info"]["epoch"] == 3
    assert second["info"]["model_sha256"] != first["info"]["model_sha256"]
    model = load_model(run, which="last").model
    test = load_dataset("fashion-mnist")
    fresh = evaluate(
        model, test.x_test[:16], test.y_test[:16], ["aa"], eps=0.1, aa_attacks=["apgd-ce"]
    )
    assert second["attacks"]["aa"]["correct"] == fresh.attacks["aa"].correct
    assert not _temporaries(run)


def test_two_studies_on_one_folder_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A study folder is held by its study: a second ``phaseguard study`` on it exits 2 with a
    line naming the first; the first finishes untouched."""
    study = tmp_path / "study.yaml"
    study.write_text(
        "methods: {pgd_at: tiny.yaml}\nseeds: [0]\n"
        "eval: {attacks: [natural], n: 16}\nanalyze: {n: 16}\n"
    )
    (tmp_path / "tiny.yaml").write_text(tiny_config("train.epochs=2").to_yaml())
    out = tmp_path / "out"
    proc = _cli("study", str(study), "--out", str(out))
    lock = out / LOCK_NAME
    deadline = time.time() + 120
    while f'"pid": {proc.pid}' not in (lock.read_text() if lock.exists() else ""):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    assert main(["study", str(study), "--out", str(out)]) == 2
    assert f"is in use by pid {proc.pid}" in _one_error_line(capsys)
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (out / "study.json").is_file() and "pgd_at_s0: analyze finished" in stdout + err


def test_every_file_is_written_through_the_atomic_helper() -> None:
    """No module writes a file in place: phaseguard.files is the one writer (the dataset
    downloader and the Tiny-ImageNet cache stream to a partial file and rename it)."""
    allowed = {"files.py", "download.py", "tiny_imagenet.py"}
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in allowed:
            continue
        text = path.read_text()
        for pattern in (r"\.write_text\(", r"\.write_bytes\(", r"open\([^)]*['\"][wa]b?['\"]"):
            offenders += [f"{path.name}: {m.group(0)}" for m in re.finditer(pattern, text)]
    assert not offenders, offenders


def _limit_file_size() -> None:
    """A full disk, as ``ulimit -f`` makes it: writes past 64 KiB fail (EFBIG)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))


def test_a_full_disk_during_training_is_one_line_and_keeps_the_checkpoint(
    tmp_path: Path, tiny_run: Path
) -> None:
    """A checkpoint write that fails for lack of space (``ulimit -f``: the checkpoint is
    larger than the limit, the log and config are not) ends the run with one line naming
    the checkpoint and exit 2; the previous checkpoint stays, and no temporary file."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = _digests(run)
    proc = subprocess.run(
        [sys.executable, "-m", "phaseguard", "train", "--resume", str(run), "train.epochs=4"],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=_limit_file_size,
        env=ENV,
    )
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("phaseguard: error: cannot write ") and "File too large" in line
    assert str(run / "checkpoints") in line
    after = _digests(run)
    for name in ("checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "log.csv"):
        assert after[name] == before[name], name
    assert not _temporaries(run)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["eval", "--eps", "nan"], "eps must be a finite number >= 0, got nan"),
        (["eval", "--eps", "-1"], "eps must be a finite number >= 0, got -1.0"),
        (["analyze", "--eps", "2"], "eps must be in [0, 1] under linf"),
        (["eval", "--n", "0"], "at least 1, got 0"),
        (["analyze", "--batch-size", "0"], "batch size must be at least 1, got 0"),
    ],
)
def test_measurement_settings_without_meaning_are_one_line(
    args: list[str], fragment: str, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval/analyze settings that mean nothing (a NaN, negative or, under linf, >1 eps; no
    images; an empty batch) are one line, and nothing is written into the run."""
    before = _digests(tiny_run)
    assert main([args[0], str(tiny_run), *args[1:]]) == 2
    assert fragment in _one_error_line(capsys)
    assert _digests(tiny_run) == before


@pytest.mark.parametrize("text", ["", "[1, 2", "- just a list\n"])
def test_resume_of_an_empty_or_broken_config_is_one_line(
    text: str, tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run whose config.yaml is empty, not YAML or not a mapping cannot be resumed: one line
    naming the file; its checkpoints are untouched."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_text(text)
    before = _digests(run)
    assert main(["train", "--resume", str(run)]) == 2
    assert str(run / "config.yaml") in _one_error_line(capsys)
    assert _digests(run) == before
