"""Adversarial attacks in [0, 1] pixel space, one per module, on one small base class.

Every attack maps images x [B, C, H, W] in [0, 1] and labels y int64 [B] to x_adv of the same
shape and dtype, in [0, 1] and in the eps-ball around x; the attack runs on the model's device
(x and y are moved there, the model never is), in eval mode with frozen parameters, and the
model gets its modes back afterwards (see :mod:`phaseguard.attacks.base`). torchattacks'
spellings work where they mean the same: ``PGD(model, eps=8/255, alpha=2/255, steps=10)``,
``attack(images, labels)``.

- :class:`FGSM` (and RS-FGSM), :class:`PGD` (linf/l2, CE/CW loss, restarts, targeted),
  :class:`CWLinf` (CW-inf: PGD on the CW margin; ``CW`` is an alias of it, and not torchattacks'
  L2 Carlini-Wagner optimisation), :class:`TradesKL` (TRADES' KL attack and DAT's EAEG).
- :func:`build_attack` / :func:`list_attacks` / :func:`register_attack`: the protocol's image
  attacks by name (fgsm, pgd20, pgd100, cw), and yours.
- :func:`run_autoattack`: the official AutoAttack, resumable, returning per-sample flags.
- :func:`eval_attack` / :func:`list_eval_attacks`: what ``phaseguard eval`` runs by name
  (natural, the image attacks, aa), each scoring images as correct or not, with its label and
  the properties the sanity checks use; :func:`register_eval_attack` adds one (an image attack
  is scored with :func:`image_attack`).
"""

from phaseguard.attacks.autoattack import run_autoattack
from phaseguard.attacks.base import Attack, attack_mode, frozen_parameters
from phaseguard.attacks.cw import CW, CWLinf
from phaseguard.attacks.evaluation import (
    NATURAL,
    Ceiling,
    EvalAttack,
    EvalTask,
    eval_attack,
    image_attack,
    list_eval_attacks,
    register_eval_attack,
)
from phaseguard.attacks.fgsm import FGSM
from phaseguard.attacks.pgd import PGD
from phaseguard.attacks.registry import build_attack, list_attacks, register_attack
from phaseguard.attacks.trades_kl import TradesKL

__all__ = [
    "CW",
    "CWLinf",
    "FGSM",
    "NATURAL",
    "PGD",
    "Attack",
    "Ceiling",
    "EvalAttack",
    "EvalTask",
    "TradesKL",
    "attack_mode",
    "build_attack",
    "eval_attack",
    "frozen_parameters",
    "image_attack",
    "list_attacks",
    "list_eval_attacks",
    "register_attack",
    "register_eval_attack",
    "run_autoattack",
]
