"""The adversarial-training baselines DAT is compared with: PGD-AT, TRADES, MART.

Every attack setting (norm, eps, step, steps) comes from the config's ``attack`` section.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import PGD, TradesKL
from .base import Batch, Method, Metrics, accuracy
from .registry import register_method


def kl_div(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax p || softmax q), shape [B], computed in float32."""
    log_p = F.log_softmax(p_logits.float(), dim=1)
    log_q = F.log_softmax(q_logits.float(), dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def _clean_and_adv_logits(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Two forwards, as the reference implementations do: in train mode each batch gets its
    own BN statistics (one concatenated forward would mix them)."""
    return model(batch["x"]).float(), model(batch["x_adv"]).float()


class _AdversarialExamples(Method):
    """Shared ``prepare``: adversarial examples of ``attack_class`` on the classifier (eval mode),
    with the config's attack settings."""

    attack_class: type[PGD] = PGD

    def __init__(self, ctx, options) -> None:
        super().__init__(ctx, options)
        a = ctx.attack_config
        self.attack = self.attack_class(
            ctx.model, eps=a.eps, step=a.step, steps=a.steps, norm=a.norm
        )

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        batch = super().prepare(x, y)
        batch["x_adv"] = self.attack(batch["x"], y)
        return batch


@register_method
class PGDAT(_AdversarialExamples):
    """Madry et al. (2018): cross-entropy on PGD adversarial examples only."""

    name = "pgd_at"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        logits = model(batch["x_adv"]).float()
        return F.cross_entropy(logits, batch["y"]), {"acc_adv": accuracy(logits, batch["y"])}


@dataclass
class TradesOptions:
    beta: float = 6.0  # weight of the robustness (KL) term


@register_method
class TRADES(_AdversarialExamples):
    """Zhang et al. (2019): CE(f(x), y) + beta * KL(p(x) || p(x')), x' from the KL attack."""

    name = "trades"
    Options = TradesOptions
    attack_class = TradesKL

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        y = batch["y"]
        logits, logits_adv = _clean_and_adv_logits(model, batch)
        loss = F.cross_entropy(logits, y) + self.options.beta * kl_div(logits, logits_adv).mean()
        return loss, {"acc": accuracy(logits, y), "acc_adv": accuracy(logits_adv, y)}


@dataclass
class MartOptions:
    beta: float = 6.0  # weight of the misclassification-aware KL term (MART's paper value)


@register_method
class MART(_AdversarialExamples):
    """Wang et al. (2020): boosted CE on x' + beta * KL(p(x)||p(x')) weighted by 1 - p_y(x)."""

    name = "mart"
    Options = MartOptions

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        y = batch["y"]
        logits, logits_adv = _clean_and_adv_logits(model, batch)
        probs_adv = logits_adv.softmax(dim=1)
        top2 = probs_adv.topk(2, dim=1).indices
        runner_up = torch.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])
        boosted = F.cross_entropy(logits_adv, y) + F.nll_loss(
            torch.log(1.0001 - probs_adv + 1e-12), runner_up
        )
        p_true = logits.softmax(dim=1).gather(1, y[:, None]).squeeze(1)
        robust = (kl_div(logits, logits_adv) * (1.0000001 - p_true)).mean()
        loss = boosted + self.options.beta * robust
        return loss, {"acc": accuracy(logits, y), "acc_adv": accuracy(logits_adv, y)}
