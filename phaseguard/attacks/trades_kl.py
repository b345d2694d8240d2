"""The KL attack of TRADES (Zhang et al., 2019) and DAT's EAEG (docs/dat.md section 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phaseguard.attacks.base import Objective, check_nonnegative
from phaseguard.attacks.pgd import PGD
from phaseguard.errors import ConfigError, DataError


class TradesKL(PGD):
    """Ascend ``ce_weight * CE_ls(f(x'), y) + beta * KL(p(x) || p(x'))`` from x + init_std * N(0,1).

    - TRADES: ``TradesKL(model)`` (``ce_weight=0``: the KL term alone; beta then only scales it).
    - DAT's EAEG: ``TradesKL(model, steps=5, beta=15.0, ce_weight=1.0, label_smoothing=0.5)``.

    p(x) is the clean prediction, computed once per call without a graph (the model is in eval
    mode, so it does not depend on x'; docs/dat.md section 12), or taken from ``target_logits``. The
    objective is summed over the batch rather than averaged: the sign (linf) and per-sample
    normalised (l2) steps are the same either way. Steps and projections are those of
    :class:`PGD`.

    The attack never changes a split-BN model's branch: run it as
    ``with bn_branch(model, "aux"): x_hat_adv = attack(x_hat, y, keep_graph_to_input=True)``
    and both the clean target and the steps use the auxiliary statistics.

    Args:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes].
        eps, step, steps, norm, alpha: as in :class:`PGD` (TRADES: 8/255, 2/255, 10, "linf").
        beta: weight of the KL term.
        ce_weight: weight of the cross-entropy term (0 for TRADES, 1 for DAT).
        label_smoothing: label smoothing of that cross-entropy (0.5 in DAT's CIFAR setting).
        init_std: standard deviation of the Gaussian start (0.001 in TRADES and DAT).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        step: float | None = None,
        steps: int = 10,
        beta: float = 1.0,
        ce_weight: float = 0.0,
        label_smoothing: float = 0.0,
        init_std: float = 0.001,
        norm: str = "linf",
        *,
        alpha: float | None = None,
    ) -> None:
        super().__init__(model, eps, step, steps, norm=norm, alpha=alpha)
        self.beta = check_nonnegative("beta", beta)
        self.ce_weight = check_nonnegative("ce_weight", ce_weight)
        self.label_smoothing = check_nonnegative("label_smoothing", label_smoothing)
        if self.label_smoothing > 1:
            raise ConfigError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")
        self.init_std = check_nonnegative("init_std", init_std)

    def __call__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        target_logits: Tensor | None = None,
        keep_graph_to_input: bool = False,
    ) -> Tensor:
        """x [B, C, H, W] in [0, 1], y int64 [B] -> x_adv like x, on the model's device, in
        [0, 1] and in the ball.

        target_logits: optional clean logits f(x) [B, classes] (any float dtype, detached here)
            to skip the clean forward; they must come from the model in eval mode with the
            same BN branch.
        keep_graph_to_input: project the last step around the caller's x, not a detached copy,
            so that a loss on x_adv back-propagates to x (to DAT's generator through x_hat)
            where the ball constraint is active; see :meth:`Attack.__call__`.
        """
        return self._attack(
            x, y, keep_graph_to_input, lambda x0, y0: self.perturb(x0, y0, target_logits)
        )

    def start(self, x: Tensor) -> Tensor:
        return x + self.init_std * torch.randn_like(x)

    def perturb(self, x: Tensor, y: Tensor, target_logits: Tensor | None = None) -> Tensor:
        if target_logits is None:
            with torch.no_grad():
                target_logits = self.model(x)
        elif target_logits.dim() != 2 or len(target_logits) != len(x):
            raise DataError(
                f"target_logits must be [{len(x)}, classes], got {tuple(target_logits.shape)}"
            )
        return self.ascend(x, self.start(x), self.kl_objective(y, target_logits))

    def kl_objective(self, y: Tensor, target_logits: Tensor) -> Objective:
        """Per-sample ``ce_weight * CE_ls(logits, y) + beta * KL(softmax(target) || softmax)``."""
        log_p = F.log_softmax(target_logits.detach().float(), dim=1)
        p = log_p.exp()

        def objective(logits: Tensor) -> Tensor:
            loss = self.beta * (p * (log_p - F.log_softmax(logits, dim=1))).sum(1)
            if self.ce_weight:
                ce = F.cross_entropy(
                    logits, y, reduction="none", label_smoothing=self.label_smoothing
                )
                loss = loss + self.ce_weight * ce
            return loss

        return objective
