"""Projected gradient descent (Madry et al., 2018), linf or l2, on the CE or the CW margin loss,
untargeted or targeted."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from phaseguard.attacks.base import (
    Attack,
    Objective,
    ascent_direction,
    check_count,
    check_nonnegative,
    project,
    random_init,
    step_size,
)
from phaseguard.errors import ConfigError

LOSSES = ("ce", "cw")


def cw_margin(logits: Tensor, y: Tensor, kappa: float = 0.0, targeted: bool = False) -> Tensor:
    """CW margin to ascend: ``min(max_{j != y} z_j - z_y, kappa)`` per sample.

    logits: float [B, classes]; y: int64 [B]; returns [B]. This is minus the f6 objective of
    Carlini & Wagner, ``max(z_y - max_{j != y} z_j, -kappa)``: the loss stops growing once the
    sample is misclassified by a margin of kappa. ``targeted``: y holds target classes and the
    margin is ``min(z_y - max_{j != y} z_j, kappa)``, which stops growing once the sample is
    classified as its target by a margin of kappa.
    """
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return (true - other if targeted else other - true).clamp(max=kappa)


class PGD(Attack):
    """PGD: ``steps`` ascent steps of size ``step``, each projected onto the eps-ball and [0, 1].

    linf steps follow ``sign(grad)``, l2 steps ``grad / ||grad||_2`` (per sample). The loss is
    computed in float32 per sample and summed, so a sample's step never depends on the batch.
    torchattacks' ``PGD(model, eps=8/255, alpha=2/255, steps=10, random_start=True)`` is spelled
    the same here (linf, cross-entropy).

    Args:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes].
        eps: radius of the ball (linf 8/255 for CIFAR; 0.1 is usual for Fashion-MNIST).
        step: step size (default 2/255: eps/4 in the CIFAR protocol).
        steps: number of steps (0 returns the start point).
        norm: "linf" or "l2".
        random_start: start from a random point of the ball (see
            :func:`~phaseguard.attacks.base.random_init`) instead of x.
        restarts: number of runs from fresh random starts. Each run after the first attacks only
            the samples no run has misclassified yet; each sample keeps the first run that
            misclassifies it, or else the run with the highest final loss. One extra forward
            per run picks them (none when ``restarts == 1``).
        loss: "ce" (cross-entropy) or "cw" (CW margin, :func:`cw_margin`).
        kappa: CW confidence (``loss="cw"`` only): ascend until misclassified by kappa.
        alpha: torchattacks' name for ``step`` (give one of the two).
        targeted: the labels passed to the call are target classes, and the attack descends the
            cross-entropy of the target (``loss="ce"``) or ascends the target's CW margin
            (``loss="cw"``, :func:`cw_margin` with ``targeted=True``); with restarts, a sample
            keeps the first run that reaches its target. torchattacks' spelling:
            ``set_mode_targeted_by_label()``.

    Call: ``PGD(model)(x, y)`` with x [B, C, H, W] in [0, 1], y int64 [B] (the true labels, or
    the targets when ``targeted``); returns x_adv like x, on the model's device, in [0, 1] and in
    the ball; the model is in eval mode during the attack, its mode is restored afterwards and
    its parameters get no gradients (see :mod:`phaseguard.attacks.base`).
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        step: float | None = None,
        steps: int = 10,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        kappa: float = 0.0,
        *,
        alpha: float | None = None,
        targeted: bool = False,
    ) -> None:
        super().__init__(model, eps, norm)
        if loss not in LOSSES:
            raise ConfigError(f"unknown PGD loss {loss!r}; expected one of {', '.join(LOSSES)}")
        self.step = check_nonnegative("step", step_size(step, alpha, 2 / 255))
        self.steps = check_count("steps", steps, 0)
        self.random_start = bool(random_start)
        self.restarts = check_count("restarts", restarts, 1)
        self.loss = loss
        self.kappa = check_nonnegative("kappa", kappa)
        self.targeted = bool(targeted)

    @property
    def alpha(self) -> float:
        """torchattacks' name for :attr:`step`."""
        return self.step

    def objective(self, y: Tensor) -> Objective:
        """The per-sample loss this attack ascends, for labels (or targets) y [B]."""
        if self.loss == "cw":
            return lambda logits: cw_margin(logits, y, self.kappa, self.targeted)
        if self.targeted:
            return lambda logits: -F.cross_entropy(logits, y, reduction="none")
        return lambda logits: F.cross_entropy(logits, y, reduction="none")

    def start(self, x: Tensor) -> Tensor:
        """The first iterate for x [B, ...] (projected by :meth:`ascend` before use)."""
        return random_init(x, self.eps, self.norm) if self.random_start else x

    def ascend(self, x: Tensor, start: Tensor, objective: Objective) -> Tensor:
        """Run the steps from ``start`` around x; return the last iterate before projection."""
        candidate = start
        for _ in range(self.steps):
            x_adv = project(candidate, x, self.eps, self.norm)
            grad = self._input_grad(x_adv, objective)
            candidate = x_adv + self.step * ascent_direction(grad, self.norm)
        return candidate

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.restarts == 1:
            return self.ascend(x, self.start(x), self.objective(y))
        best = x.clone()
        best_loss = torch.full(y.shape, float("-inf"), device=x.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        for _ in range(self.restarts):
            idx = (~done).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            xi, objective = x[idx], self.objective(y[idx])
            candidate = self.ascend(xi, self.start(xi), objective)
            with torch.no_grad():
                logits = self.model(project(candidate, xi, self.eps, self.norm)).float()
            loss, predicted = objective(logits), logits.argmax(1)
            reached = predicted == y[idx] if self.targeted else predicted != y[idx]
            keep = reached | (loss > best_loss[idx])
            best[idx[keep]] = candidate[keep]
            best_loss[idx[keep]] = loss[keep]
            done[idx] = reached
        return best
