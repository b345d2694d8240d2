"""CW-inf: PGD on the Carlini-Wagner margin loss (the "CW" column of robustness tables).

:class:`CWLinf` is not torchattacks' ``CW``, the L2 optimisation attack of Carlini & Wagner
(Adam on a tanh-reparametrised image, a binary search over c); it is the L-inf variant the
robustness literature reports as "CW": PGD steps on the CW margin inside the eps-ball. ``CW`` is
kept as an alias of :class:`CWLinf` (the same class) for code written before the rename.
"""

from __future__ import annotations

from torch import nn

from phaseguard.attacks.pgd import PGD


class CWLinf(PGD):
    """CW-inf: :class:`PGD` with ``loss="cw"``, ascending ``min(max_{j != y} z_j - z_y, kappa)``.

    Defaults follow the evaluation protocol: linf eps 8/255, step 2/255, 30 steps, random start.
    (TRADES/MART-style evaluation scripts use 20 or 30 steps; 30 is the stronger of the two.)

    Args:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes].
        eps, step, steps, random_start, restarts, alpha, targeted: as in :class:`PGD`.
        kappa: confidence; the margin stops counting once a sample is misclassified by kappa.
        norm: "linf" (CW-inf) or "l2" (PGD-L2 steps on the same margin).

    Call: ``CWLinf(model)(x, y)``, x [B, C, H, W] in [0, 1], y int64 [B] -> x_adv like x, on the
    model's device, in [0, 1] and in the ball; model in eval mode during the attack and its mode
    restored; parameters get no gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        step: float | None = None,
        steps: int = 30,
        kappa: float = 0.0,
        random_start: bool = True,
        restarts: int = 1,
        norm: str = "linf",
        *,
        alpha: float | None = None,
        targeted: bool = False,
    ) -> None:
        super().__init__(
            model,
            eps,
            step,
            steps,
            norm=norm,
            random_start=random_start,
            restarts=restarts,
            loss="cw",
            kappa=kappa,
            alpha=alpha,
            targeted=targeted,
        )


#: The former name of :class:`CWLinf` (the same class).
CW = CWLinf
