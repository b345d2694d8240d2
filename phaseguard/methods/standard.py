"""Clean (non-adversarial) training: the baseline every robust method is measured against."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .base import Batch, Method, Metrics, accuracy
from .registry import register_method


@register_method
class Standard(Method):
    """Cross-entropy on the clean (augmented) batch."""

    name = "standard"

    def loss(self, model: nn.Module, batch: Batch) -> tuple:
        logits = model(batch["x"]).float()
        metrics: Metrics = {"acc": accuracy(logits, batch["y"])}
        return F.cross_entropy(logits, batch["y"]), metrics
