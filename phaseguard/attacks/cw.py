"""CW-inf: PGD on the Carlini-Wagner margin loss (the "CW" column of robustness tables)."""

from __future__ import annotations

from torch import nn

from phaseguard.attacks.pgd import PGD


class CW(PGD):
    """CW-inf: :class:`PGD` with ``loss="cw"``, ascending ``min(max_{j != y} z_j - z_y, kappa)``.

    Defaults follow the evaluation protocol: linf eps 8/255, step 2/255, 30 steps, random start.
    (TRADES/MART-style evaluation scripts use 20 or 30 steps; 30 is the stronger of the two.)

    Args:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes].
        eps, step, steps, random_start, restarts, norm: as in :class:`PGD`.
        kappa: confidence; the margin stops counting once a sample is misclassified by kappa.

    Call: ``CW(model)(x, y)``, x [B, C, H, W] in [0, 1], y int64 [B] -> x_adv like x, in [0, 1]
    and in the ball; model in eval mode during the attack and its mode restored; parameters get
    no gradients.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        step: float = 2 / 255,
        steps: int = 30,
        kappa: float = 0.0,
        random_start: bool = True,
        restarts: int = 1,
        norm: str = "linf",
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
        )
