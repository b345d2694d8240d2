"""The evaluation attacks of SPEC section 9 by name: ``build_attack("pgd20", model, eps)``.

Every name builds its attack from ``(model, eps, norm)`` with step ``eps / 4`` (2/255 at the
protocol's 8/255) and a random start:

- ``fgsm``: RS-FGSM, step 1.25 * eps.
- ``pgd20``, ``pgd100``: PGD on the cross-entropy, 20 / 100 steps.
- ``cw``: CW-inf, PGD on the CW margin (kappa 0), 30 steps.

AutoAttack is not in the registry: it returns per-sample flags rather than images, see
:func:`phaseguard.attacks.run_autoattack`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from phaseguard.attacks.base import Attack
from phaseguard.attacks.cw import CW
from phaseguard.attacks.fgsm import FGSM
from phaseguard.attacks.pgd import PGD
from phaseguard.errors import ConfigError

_ATTACKS: dict[str, Callable[[nn.Module, float, str], Attack]] = {
    "fgsm": lambda model, eps, norm: FGSM(model, eps, random_start=True, norm=norm),
    "pgd20": lambda model, eps, norm: PGD(model, eps, eps / 4, 20, norm=norm),
    "pgd100": lambda model, eps, norm: PGD(model, eps, eps / 4, 100, norm=norm),
    "cw": lambda model, eps, norm: CW(model, eps, eps / 4, 30, norm=norm),
}


def list_attacks() -> list[str]:
    """Names :func:`build_attack` accepts, in protocol order."""
    return list(_ATTACKS)


def build_attack(name: str, model: nn.Module, eps: float = 8 / 255, norm: str = "linf") -> Attack:
    """The evaluation attack ``name`` (see :func:`list_attacks`) on ``model`` at radius ``eps``.

    Raises:
        ConfigError: unknown name (the message lists the known ones), or invalid eps/norm.
    """
    if name not in _ATTACKS:
        raise ConfigError(f"unknown attack {name!r}; known attacks: {', '.join(_ATTACKS)}")
    return _ATTACKS[name](model, eps, norm)
