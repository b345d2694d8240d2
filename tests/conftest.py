"""Shared fixtures: a tiny but real training configuration on Fashion-MNIST."""

from __future__ import annotations

import pytest
import torch

from phaseguard.config import Config, load_config

# A few hundred real Fashion-MNIST images, a narrow small net, a 2-step attack: seconds per epoch.
TINY = [
    "data.name=fashion-mnist",
    "data.train_size=384",
    "data.val_per_class=4",
    "model.name=smallcnn",
    "model.kwargs.width=8",
    "method.name=pgd_at",
    "attack.eps=0.1",
    "attack.step=0.05",
    "attack.steps=2",
    "schedule.name=onecycle",
    "optim.lr=0.05",
    "train.epochs=3",
    "train.batch_size=64",
    "train.val_attack_steps=2",
    "train.progress=false",
    "train.threads=2",
]


def tiny_config(*overrides: str) -> Config:
    """The tiny configuration with extra ``key=value`` overrides."""
    return load_config(None, [*TINY, *overrides])


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A finished 3-epoch PGD-AT run folder (shared, read-only for the tests that use it)."""
    from phaseguard.training import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(), out)
    return out


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault-injection suite's count (tests/hostile: one test per hostile case)."""
    reports = [
        r
        for key in ("passed", "failed")
        for r in terminalreporter.stats.get(key, [])
        if r.when == "call" and "tests/hostile/" in r.nodeid.replace("\\", "/")
    ]
    if reports:
        held = sum(r.passed for r in reports)
        terminalreporter.write_line(
            f"hostile cases (tests/hostile): {len(reports)} tried, {held} held"
        )
