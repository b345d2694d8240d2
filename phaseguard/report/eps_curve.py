"""Robust accuracy against the perturbation budget: one evaluation attack (PGD-20 by default)
at several eps, cached per run.

``run_eps_curve(RUN_DIR, attack=...)`` runs an evaluation attack (a name from
:func:`~phaseguard.attacks.list_eval_attacks`) on the first n test images at
``multiples x cfg.attack.eps`` (the run's norm) and caches the result in
``RUN_DIR/eps_curve.json``; the cache is reused while its settings (attack, n, eps list, norm,
checkpoint and its SHA-256, seed) match the request, and recomputed otherwise.
:func:`plot_eps_curves` draws one line per run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import EvalTask, eval_attack
from ..data import Dataset, load_dataset
from ..errors import ConfigError
from ..files import write_json
from ..loading import load_model
from ..lock import FolderLocked, folder_lock
from ..run_dir import RunDir
from .plots import pyplot, save_figure

#: The attack of the curve unless another is asked for.
DEFAULT_ATTACK = "pgd20"
#: Default budgets, as multiples of the run's training eps.
EPS_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
#: The fields that must match for ``eps_curve.json`` to be reused.
CACHE_KEY = ("attack", "n", "eps", "norm", "which", "seed", "checkpoint_sha256")


@dataclass
class EpsCurve:
    """Robust accuracy (``accuracy[i]``, in [0, 1]; ``correct[i]`` of ``n`` images) of one
    checkpoint under ``attack`` at radius ``eps[i]`` (``norm``), as ``eps_curve.json`` holds it."""

    attack: str
    n: int
    eps: list[float]
    norm: str
    which: str  # the checkpoint asked for ("best" falls back to "last" when there is none)
    checkpoint: str  # the file used, relative to the run folder
    checkpoint_sha256: str
    epoch: int | None
    seed: int
    accuracy: list[float]
    correct: list[int]
    seconds: float

    def key(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in CACHE_KEY}


def robust_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    attack: str = DEFAULT_ATTACK,
) -> list[int]:
    """How many of the images x (uint8 [N, C, H, W], or float in [0, 1]) with labels y (int64
    [N]) ``model`` classifies correctly under the evaluation attack ``attack`` at each radius of
    ``eps`` (eps 0: the clean count for the image attacks). The global torch RNG is seeded with
    ``seed`` before each radius."""
    run = eval_attack(attack).run
    counts = []
    for radius in eps:
        torch.manual_seed(seed)
        task = EvalTask(model, x, y, radius, norm, batch_size, device, seed)
        counts.append(int(run(task).sum()))
    return counts


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_eps_curve(path: Path) -> EpsCurve | None:
    """The curve cached in ``path``, or None when it is missing or not a readable cache (not
    JSON, other fields, accuracies that are not one number per eps): it is then recomputed."""
    try:
        curve = EpsCurve(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    lists = (curve.eps, curve.accuracy, curve.correct)
    if not all(isinstance(v, list) for v in lists) or len({len(v) for v in lists}) != 1:
        return None
    numbers = [*curve.eps, *curve.accuracy, *curve.correct]
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in numbers):
        return None
    return curve


def run_eps_curve(
    run_dir: str | Path,
    n: int = 500,
    multiples: Sequence[float] = EPS_MULTIPLES,
    which: str = "best",
    seed: int = 0,
    device: str | torch.device = "cpu",
    data: Dataset | None = None,
    log: Callable[[str], None] | None = None,
    attack: str = DEFAULT_ATTACK,
) -> EpsCurve:
    """The accuracy of a run's ``which`` checkpoint under the evaluation attack ``attack`` on
    its first ``n`` test images at ``multiples x cfg.attack.eps``, from ``RUN_DIR/eps_curve.json``
    when that was computed with the same settings (the attack included), else computed and
    written there.

    ``data``: the run's dataset, if the caller has it loaded (else read from the run's config).

    Raises:
        ConfigError: ``n`` < 1, or an unknown attack (the message lists the known ones).
    """
    if n < 1:
        raise ConfigError(f"the eps curve needs a positive number of images, got {n}")
    label = eval_attack(attack).label
    run = RunDir(Path(run_dir))
    loaded = load_model(run.root, which=which, device=device)
    cfg = loaded.config
    if data is None:
        data = load_dataset(cfg.data.name, cfg.data.root)
    n = min(n, len(data.y_test))
    curve = EpsCurve(
        attack=attack,
        n=n,
        eps=[round(m * cfg.attack.eps, 12) for m in multiples],
        norm=cfg.attack.norm,
        which=which,
        checkpoint=loaded.source.relative_to(run.root).as_posix(),
        checkpoint_sha256=_sha256(loaded.source),
        epoch=loaded.epoch,
        seed=seed,
        accuracy=[],
        correct=[],
        seconds=0.0,
    )
    cached = read_eps_curve(run.eps_curve_json)
    if cached is not None and cached.key() == curve.key():
        if log:
            log(f"{run.root}: eps curve reused from {run.eps_curve_json}")
        return cached
    if log:
        log(f"{run.root}: {label} at {len(curve.eps)} eps on {n} test images ...")
    start = time.perf_counter()
    curve.correct = robust_correct(
        loaded.model,
        data.x_test[:n],
        data.y_test[:n],
        curve.eps,
        curve.norm,
        seed,
        batch_size=cfg.eval.batch_size,
        device=device,
        attack=attack,
    )
    curve.accuracy = [c / n for c in curve.correct]
    curve.seconds = time.perf_counter() - start
    try:  # a cache: the page can do without it (a read-only or busy run folder)
        with folder_lock(run.root):
            write_json(run.eps_curve_json, asdict(curve))
    except OSError as exc:
        if log:
            log(f"{run.root}: eps curve not cached ({exc.strerror}: {run.eps_curve_json})")
    except FolderLocked as exc:
        if log:
            log(f"{run.root}: eps curve not cached ({exc})")
    return curve


def plot_eps_curves(curves: dict[str, EpsCurve], out: Path) -> Path:
    """One line per run (label -> curve, its checkpoint, epoch and n in the legend): robust
    accuracy (%) against eps (the x axis names the norm), the y axis named after the curves'
    attack(s); writes PNG ``out``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    palette = plt.cm.tab20.colors if len(curves) > 10 else plt.cm.tab10.colors  # no repeats
    for i, (label, c) in enumerate(curves.items()):
        ax.plot(
            c.eps,
            [100 * a for a in c.accuracy],
            marker="o",
            markersize=3,
            color=palette[i % len(palette)],
            label=f"{label} ({Path(c.checkpoint).stem}, epoch {c.epoch}, n={c.n})",
        )
    ax.set_xlabel(f"eps ({' / '.join(dict.fromkeys(c.norm for c in curves.values()))})")
    attacks = dict.fromkeys(eval_attack(c.attack).label for c in curves.values())
    ax.set_ylabel(f"{' / '.join(attacks)} accuracy (%)")
    ax.set_title("robust accuracy against eps")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out)
