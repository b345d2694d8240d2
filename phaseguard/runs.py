"""Measurements of a trained run, written as JSON beside it: what ``phaseguard eval`` and
``phaseguard analyze`` run, and what ``phaseguard study`` runs for each of its runs.

Each takes a run folder (or a ``.pt`` / ``.safetensors`` file), loads its model and the test set
its config names, measures the first ``n`` test images and writes the JSON (default: into the
run folder, else beside the file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .analyze import PhaseReliance, analyze_phase_reliance
from .data import Dataset, load_dataset
from .errors import PhaseguardError
from .evaluate import EvalReport, evaluate
from .loading import LoadedModel, load_model
from .train.trainer import resolve_device


def _default_out(target: str | Path, loaded: LoadedModel, name: str) -> Path:
    target = Path(target)
    return (target if target.is_dir() else loaded.source.parent) / name


def _info(loaded: LoadedModel) -> dict:
    cfg = loaded.config
    return {
        "source": str(loaded.source),
        "epoch": loaded.epoch,
        "architecture": cfg.model.name,
        "dataset": cfg.data.name,
        "method": cfg.method["name"],
    }


def _test_set(loaded: LoadedModel, data_root: str | None, n: int | None) -> tuple[Dataset, int]:
    cfg = loaded.config
    data = load_dataset(cfg.data.name, data_root or cfg.data.root)
    return data, min(n or cfg.eval.n, len(data.y_test))


def evaluate_run(
    target: str | Path,
    attacks: list[str] | None = None,
    n: int | None = None,
    eps: float | None = None,
    norm: str | None = None,
    batch_size: int | None = None,
    which: str = "best",
    data_root: str | None = None,
    device: str = "auto",
    seed: int = 0,
    aa_attacks: list[str] | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[EvalReport, Path]:
    """Evaluate a run under attack (defaults: the run's ``eval`` and ``attack`` sections) and
    write ``eval.json``; AutoAttack's progress is kept in ``eval.aa_state.json`` beside it."""
    dev = resolve_device(device)
    loaded = load_model(target, which=which, device=dev)
    cfg = loaded.config
    data, n = _test_set(loaded, data_root, n)
    out = Path(out) if out else _default_out(target, loaded, "eval.json")
    report = evaluate(
        loaded.model,
        data.x_test[:n],
        data.y_test[:n],
        attacks or cfg.eval.attacks,
        eps=cfg.attack.eps if eps is None else eps,
        norm=norm or cfg.attack.norm,
        batch_size=batch_size or cfg.eval.batch_size,
        device=dev,
        seed=seed,
        aa_state=out.with_suffix(".aa_state.json"),
        aa_attacks=aa_attacks,
        info=_info(loaded),
        log=log,
    )
    report.write(out)
    return report, out


def analyze_run(
    target: str | Path,
    n: int = 1000,
    eps: float | None = None,
    norm: str | None = None,
    attack: str = "pgd20",
    seed: int = 0,
    batch_size: int | None = None,
    which: str = "best",
    data_root: str | None = None,
    device: str = "auto",
    out: str | Path | None = None,
) -> tuple[PhaseReliance, Path]:
    """Phase reliance of a run (see :mod:`phaseguard.analyze`) on its first ``n`` test images,
    at the run's eps and norm unless given; writes ``analysis.json``."""
    if n < 1:
        raise PhaseguardError(f"n must be a positive number of images, got {n}")
    dev = resolve_device(device)
    loaded = load_model(target, which=which, device=dev)
    cfg = loaded.config
    data, n = _test_set(loaded, data_root, n)
    out = Path(out) if out else _default_out(target, loaded, "analysis.json")
    result = analyze_phase_reliance(
        loaded.model,
        data.x_test[:n],
        data.y_test[:n],
        eps=cfg.attack.eps if eps is None else eps,
        norm=norm or cfg.attack.norm,
        seed=seed,
        batch_size=batch_size or cfg.eval.batch_size,
        device=dev,
        attack=attack,
        info=_info(loaded),
    )
    result.write(out)
    return result, out
