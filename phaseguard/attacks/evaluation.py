"""The evaluation attacks by name: what ``phaseguard eval``, the study and the report's eps curve
run, each scoring every image as correctly classified or not.

An :class:`EvalAttack` maps an :class:`EvalTask` (model, images, threat model, options) to bool
[N], and carries what the tables print (``label``) and what the sanity checks of
:func:`phaseguard.evaluate` may expect of it: whether it is randomised, whether it sees the
model's gradients (white-box) or only its outputs (black-box), and the entry it must not score
above (:class:`Ceiling`). A new evaluation attack is one :func:`register_eval_attack` call
(one that crafts images registers its builder in :mod:`phaseguard.attacks.registry` and scores
them with :func:`image_attack`).

Built in, in protocol order (docs/dat.md section 9):

- ``natural``: clean accuracy (the reference every attack is checked against).
- ``fgsm``, ``pgd20``, ``pgd100``, ``cw``: the image attacks of :func:`build_attack` (``cw`` is
  :class:`~phaseguard.attacks.CWLinf`, PGD on the CW margin under the task's norm; its label
  stays "CW", the column name of robustness tables).
- ``aa``: AutoAttack (:func:`run_autoattack`), standard, or custom with ``EvalTask.aa_attacks``;
  resumable from ``EvalTask.aa_state``, its per-attack breakdown written to
  ``EvalTask.breakdown``. White-box as a whole; its black-box Square is checked through that
  breakdown (``AA_BLACK_BOX``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from phaseguard.attacks.autoattack import run_autoattack
from phaseguard.attacks.registry import build_attack
from phaseguard.errors import ConfigError
from phaseguard.predict import as_unit_float, predict_correct
from phaseguard.registry import Registry

#: The clean-accuracy entry: the reference of the "<= clean" sanity checks.
NATURAL = "natural"

#: What an entry may use of the model: nothing (clean accuracy), its gradients, its outputs only.
Access = Literal["none", "white-box", "black-box"]


@dataclass
class EvalTask:
    """What an evaluation attack runs on.

    Attributes:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes]; it runs where its
            parameters are and is never moved.
        x: images, uint8 [N, C, H, W] (0..255) or float in [0, 1], any device (moved to the
            model's one batch at a time).
        y: labels, int64 [N].
        eps: radius of the threat model; norm: "linf" or "l2".
        batch_size: images per forward / attack call.
        device: None (the model's device) or that device named explicitly (another one is a
            ConfigError, see :func:`~phaseguard.predict.run_device`).
        seed: seed of AutoAttack (the caller seeds torch's global RNG for the others).
        aa_state: AutoAttack's progress file (resumed when it exists), or None.
        aa_attacks: AutoAttack's custom version with these attacks, or None (standard).
        breakdown: filled by AutoAttack with {attack: images it was the first to break}.
        progress: label of the progress bars the entry shows on stderr while it is a terminal
            (None: no bar).
        log: receives progress lines of long entries (AutoAttack: one per finished attack).
    """

    model: nn.Module
    x: Tensor
    y: Tensor
    eps: float
    norm: str = "linf"
    batch_size: int = 256
    device: torch.device | None = None
    seed: int = 0
    aa_state: Path | None = None
    aa_attacks: list[str] | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    progress: str | None = None
    log: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Ceiling:
    """Another entry this one must not score above, and the name of that sanity check."""

    attack: str
    check: str


@dataclass(frozen=True)
class EvalAttack:
    """One evaluation attack.

    Attributes:
        label: its name in tables, figures and study columns ("PGD-20").
        run: the task -> bool [N] on the CPU, True where the model stays correct.
        access: "none" (clean), "white-box" (uses gradients) or "black-box" (outputs only).
        randomized: draws random starts or restarts, so two runs may differ on a few images.
        ceiling: the entry it must not score above (a stronger attack of the same kind).
    """

    label: str
    run: Callable[[EvalTask], Tensor]
    access: Access
    randomized: bool
    ceiling: Ceiling | None = None


EVAL_ATTACKS: Registry[EvalAttack] = Registry("attack", ConfigError)


def register_eval_attack(name: str, attack: EvalAttack) -> EvalAttack:
    """Make ``attack`` available to ``phaseguard eval`` under ``name``; ConfigError if taken."""
    return EVAL_ATTACKS.add(name, attack)


def eval_attack(name: str) -> EvalAttack:
    """The evaluation attack ``name``; ConfigError names the known ones."""
    return EVAL_ATTACKS.get(name)


def list_eval_attacks() -> list[str]:
    """Names of the evaluation attacks, in protocol order."""
    return EVAL_ATTACKS.names()


def _natural(task: EvalTask) -> Tensor:
    return predict_correct(
        task.model,
        task.x,
        task.y,
        batch_size=task.batch_size,
        device=task.device,
        progress=task.progress,
    )


def image_attack(name: str) -> Callable[[EvalTask], Tensor]:
    """``run`` of an entry scoring the images :func:`build_attack` ``name`` crafts."""

    def run(task: EvalTask) -> Tensor:
        attack = build_attack(name, task.model, eps=task.eps, norm=task.norm)
        return predict_correct(
            task.model,
            task.x,
            task.y,
            attack=attack,
            batch_size=task.batch_size,
            device=task.device,
            progress=task.progress,
        )

    return run


def _autoattack(task: EvalTask) -> Tensor:
    correct = run_autoattack(
        task.model,
        as_unit_float(task.x),
        task.y,
        eps=task.eps,
        norm=task.norm,
        batch_size=task.batch_size,
        device=task.device,
        state_path=task.aa_state,
        seed=task.seed,
        breakdown=task.breakdown,
        version="custom" if task.aa_attacks else "standard",
        attacks=task.aa_attacks,
        progress=task.progress is not None,
        log=task.log,
    )
    return correct.cpu()


register_eval_attack(NATURAL, EvalAttack("Natural", _natural, "none", randomized=False))
register_eval_attack("fgsm", EvalAttack("FGSM", image_attack("fgsm"), "white-box", True))
register_eval_attack("pgd20", EvalAttack("PGD-20", image_attack("pgd20"), "white-box", True))
register_eval_attack(
    "pgd100",
    EvalAttack(
        "PGD-100",
        image_attack("pgd100"),
        "white-box",
        True,
        Ceiling("pgd20", "more PGD steps do not help the model"),
    ),
)
register_eval_attack("cw", EvalAttack("CW", image_attack("cw"), "white-box", True))
register_eval_attack("aa", EvalAttack("AA", _autoattack, "white-box", True))
