"""FGSM (Goodfellow et al., 2015) and its random-start variant RS-FGSM (Wong et al., 2020)."""

from __future__ import annotations

from torch import nn

from phaseguard.attacks.base import step_size
from phaseguard.attacks.pgd import PGD


class FGSM(PGD):
    """One signed-gradient step of the cross-entropy: a one-step :class:`PGD`.

    Args:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes].
        eps: radius of the ball.
        random_start: start from ``x + U(-eps, eps)`` (RS-FGSM, "Fast is better than free").
        alpha: step size, stored as ``step``; defaults to 1.25 * eps with a random start (Wong
            et al.'s choice), eps without one (plain FGSM, torchattacks' ``FGSM(model, eps)``).
        norm: "linf" (sign step) or "l2" (normalised-gradient step, the fast gradient method).
        step: the step size under :class:`PGD`'s name (give ``alpha`` or ``step``).
        targeted: y holds target classes; the step descends their cross-entropy (see
            :class:`PGD`).

    Call: ``FGSM(model)(x, y)``, x [B, C, H, W] in [0, 1], y int64 [B] -> x_adv like x, on the
    model's device, in [0, 1] and in the ball; model in eval mode during the attack and its mode
    restored; parameters get no gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        random_start: bool = False,
        alpha: float | None = None,
        norm: str = "linf",
        *,
        step: float | None = None,
        targeted: bool = False,
    ) -> None:
        step = step_size(step, alpha, 1.25 * eps if random_start else eps)
        super().__init__(
            model, eps, step, 1, norm=norm, random_start=random_start, targeted=targeted
        )
