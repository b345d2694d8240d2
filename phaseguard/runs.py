"""Measurements of a trained run, written as JSON beside it: what ``phaseguard eval`` and
``phaseguard analyze`` run, and what ``phaseguard study`` runs for each of its runs.

Each takes a run folder (or a ``.pt`` / ``.safetensors`` file), loads its model and the test set
its config names, measures the first ``n`` test images and writes the JSON (default: into the
run folder, else beside the file).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .analyze import PhaseReliance, analyze_phase_reliance
from .build import resolve_device
from .data import load_dataset
from .errors import ConfigError
from .evaluation import EvalReport, evaluate
from .fingerprint import weights_sha256
from .loading import LoadedModel, load_model, resolve_checkpoint
from .lock import folder_lock
from .training.logger import log_evaluation


@dataclass
class _Setup:
    """What a measurement of a run needs: the model, its first n test images, the threat model
    (the run's unless given) and where the JSON goes."""

    loaded: LoadedModel
    device: torch.device
    x: Tensor
    y: Tensor
    eps: float
    norm: str
    batch_size: int
    out: Path

    @property
    def info(self) -> dict:
        cfg = self.loaded.config
        return {
            "source": str(self.loaded.source),
            "epoch": self.loaded.epoch,
            "architecture": cfg.model.name,
            "dataset": cfg.data.name,
            "method": cfg.method["name"],
            "model_sha256": weights_sha256(self.loaded.model),
        }


def _out_path(target: str | Path, name: str, out: str | Path | None, which: str) -> Path:
    """Where the JSON goes: ``out``, else ``name`` in the run folder (or beside the file); a
    missing ``target`` or an ``out`` that is a folder is an error before anything runs."""
    source = resolve_checkpoint(target, which)
    if out is None:
        return (Path(target) if Path(target).is_dir() else source.parent) / name
    if Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; give the file to write ({Path(out) / name})")
    return Path(out)


@contextmanager
def _measurement(
    target: str | Path,
    name: str,
    n: int | None,
    eps: float | None,
    norm: str | None,
    batch_size: int | None,
    which: str,
    data_root: str | None,
    device: str,
    out: str | Path | None,
) -> Iterator[_Setup]:
    """The :class:`_Setup` of a measurement written to ``out`` (default: ``name`` beside the
    model), while holding the lock of the folder it goes to; settings without meaning are an
    error before anything loads."""
    if n is not None and n < 1:
        raise ConfigError(f"the number of test images must be at least 1, got {n}")
    if eps is not None and not 0 <= eps < math.inf:  # NaN fails too
        raise ConfigError(f"eps must be a finite number >= 0, got {eps}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"the batch size must be at least 1, got {batch_size}")
    path = _out_path(target, name, out, which)
    with folder_lock(path.parent):
        dev = resolve_device(device)
        loaded = load_model(target, which=which, device=dev)
        cfg = loaded.config
        data = load_dataset(cfg.data.name, data_root or cfg.data.root)
        n = min(n or cfg.eval.n, len(data.y_test))
        norm = norm or cfg.attack.norm
        if eps is not None and norm == "linf" and eps > 1:
            raise ConfigError(f"eps must be in [0, 1] under linf (images are in [0, 1]), got {eps}")
        yield _Setup(
            loaded,
            dev,
            data.x_test[:n],
            data.y_test[:n],
            cfg.attack.eps if eps is None else eps,
            norm,
            batch_size or cfg.eval.batch_size,
            path,
        )


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
    write ``eval.json`` (its ``info.model_sha256`` fingerprints the evaluated weights), holding
    the lock of the folder it goes to; AutoAttack's progress is kept in
    ``eval.aa_state.json`` beside it and resumed only for the same weights and settings. A
    run folder's TensorBoard gets the accuracies as ``eval/<attack>`` at the checkpoint's epoch.
    The model is loaded onto ``device`` ("auto": CUDA when there is one). ``log`` receives a
    line per finished attack; a progress bar per attack shows on stderr while it is a
    terminal."""
    with _measurement(
        target, "eval.json", n, eps, norm, batch_size, which, data_root, device, out
    ) as run:
        report = evaluate(
            run.loaded.model,
            run.x,
            run.y,
            attacks or run.loaded.config.eval.attacks,
            eps=run.eps,
            norm=run.norm,
            batch_size=run.batch_size,
            device=run.device,
            seed=seed,
            aa_state=run.out.with_suffix(".aa_state.json"),
            aa_attacks=aa_attacks,
            info=run.info,
            log=log,
        )
        report.write(run.out)
        if (Path(target) / "config.yaml").is_file():  # a run folder: TensorBoard gets them too
            scores = {name: result.accuracy for name, result in report.attacks.items()}
            if report.worst_case is not None:
                scores["worst_case"] = report.worst_case.accuracy
            log_evaluation(target, scores, step=run.loaded.epoch)
    return report, run.out


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
    log: Callable[[str], None] | None = None,
) -> tuple[PhaseReliance, Path]:
    """Phase reliance of a run (see :mod:`phaseguard.analyze`) on its first ``n`` test images,
    at the run's eps and norm unless given; writes ``analysis.json``. ``log`` receives a line
    per finished pass; a progress bar per pass shows on stderr while it is a terminal."""
    with _measurement(
        target, "analysis.json", n, eps, norm, batch_size, which, data_root, device, out
    ) as run:
        result = analyze_phase_reliance(
            run.loaded.model,
            run.x,
            run.y,
            eps=run.eps,
            norm=run.norm,
            seed=seed,
            batch_size=run.batch_size,
            device=run.device,
            attack=attack,
            info=run.info,
            log=log,
        )
        result.write(run.out)
    return result, run.out
