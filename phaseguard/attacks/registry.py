"""The attacks of the evaluation protocol (docs/dat.md section 9) by name:
``build_attack("pgd20", model, eps)``.

Every name builds its attack from ``(model, eps, norm)`` with step ``eps / 4`` (2/255 at the
protocol's 8/255) and a random start:

- ``fgsm``: RS-FGSM, step 1.25 * eps.
- ``pgd20``, ``pgd100``: PGD on the cross-entropy, 20 / 100 steps.
- ``cw``: CW-inf (:class:`CWLinf`), PGD on the CW margin (kappa 0), 30 steps.

These craft adversarial images. What ``phaseguard eval`` runs (these, the clean accuracy and
AutoAttack, each scoring images as correct or not) is :mod:`phaseguard.attacks.evaluation`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from phaseguard.attacks.base import Attack
from phaseguard.attacks.cw import CWLinf
from phaseguard.attacks.fgsm import FGSM
from phaseguard.attacks.pgd import PGD
from phaseguard.errors import ConfigError
from phaseguard.registry import Registry

#: ``builder(model, eps, norm)`` -> the attack.
Builder = Callable[[nn.Module, float, str], Attack]

#: The builders by name, in protocol order.
ATTACKS: Registry[Builder] = Registry("attack", ConfigError)


def register_attack(name: str, builder: Builder) -> Builder:
    """Make :func:`build_attack` build ``builder(model, eps, norm)`` under ``name``.

    Raises ConfigError if ``name`` is already taken.
    """
    return ATTACKS.add(name, builder)


@ATTACKS.register("fgsm")
def _fgsm(model: nn.Module, eps: float, norm: str) -> Attack:
    return FGSM(model, eps, random_start=True, norm=norm)


@ATTACKS.register("pgd20")
def _pgd20(model: nn.Module, eps: float, norm: str) -> Attack:
    return PGD(model, eps, eps / 4, 20, norm=norm)


@ATTACKS.register("pgd100")
def _pgd100(model: nn.Module, eps: float, norm: str) -> Attack:
    return PGD(model, eps, eps / 4, 100, norm=norm)


@ATTACKS.register("cw")
def _cw(model: nn.Module, eps: float, norm: str) -> Attack:
    return CWLinf(model, eps, eps / 4, 30, norm=norm)


def list_attacks() -> list[str]:
    """Names :func:`build_attack` accepts, in protocol order."""
    return ATTACKS.names()


def build_attack(name: str, model: nn.Module, eps: float = 8 / 255, norm: str = "linf") -> Attack:
    """The attack ``name`` (see :func:`list_attacks`) on ``model`` at radius ``eps``.

    The attack maps images [B, C, H, W] in [0, 1] and labels int64 [B] to adversarial images of
    the same shape in [0, 1], within ``eps`` of the originals in ``norm`` ("linf" or "l2").

    Raises:
        ConfigError: unknown name (the message lists the known ones), or invalid eps/norm.
    """
    return ATTACKS.get(name)(model, eps, norm)
