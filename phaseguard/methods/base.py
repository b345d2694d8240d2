"""What a training method is: a small object that turns a batch into a loss.

The trainer owns everything else (epochs, optimiser, schedule, precision, checkpoints, logs,
DDP). Per batch it calls, in this order::

    batch = method.prepare(x, y)           # augmentation, adversarial examples; no weight grads
    loss, metrics = method.loss_and_backward(model, batch, backward)
                                           # method.loss, and its gradient taken by backward
    (trainer: optimiser step)
    method.after_step(batch)               # e.g. DAT's generator update

``x`` is the un-augmented batch: a method applies ``ctx.augment`` itself, because DAT needs
both views (it mixes amplitudes of the raw image and augments the result).
``loss`` takes the model as an argument so that wrappers (AWP's perturbed proxy, DDP) can ask
for the same loss on another set of weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..config import AttackConfig

Batch = dict[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]


@dataclass
class MethodContext:
    """What a method may use besides its options.

    ``model`` is what the training loss runs through (DDP-wrapped when distributed); ``net`` is
    the classifier without DDP (compiled when ``train.compile`` is on), used by attacks and by
    eval-mode forwards, which must not go through DDP's gradient synchronisation.
    """

    model: nn.Module
    net: nn.Module
    attack: AttackConfig
    num_classes: int
    image_shape: tuple[int, int, int]
    device: torch.device
    augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # the training crop/flip
    precision: str = "fp32"  # the trainer's autocast precision
    distributed: bool = False


@dataclass
class NoOptions:
    """A method without options of its own."""


class Method:
    """Base class. Subclasses set ``name`` and ``Options`` and implement ``prepare``/``loss``."""

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions

    def __init__(self, ctx: MethodContext, options: Any) -> None:
        self.ctx = ctx
        self.options = options

    @classmethod
    def wants_split_bn(cls, options: Any) -> bool:
        """Whether the classifier needs split BN with these options (DAT does)."""
        return False

    @classmethod
    def supports_fp16(cls, options: Any) -> bool:
        """Whether the method trains correctly under fp16 autocast with the trainer's gradient
        scaler (the trainer refuses fp16, and ``precision: auto`` avoids it, when not)."""
        return True

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """Everything of a batch the loss needs, from the un-augmented x [B,C,H,W] in [0,1]
        and y [B] int64. The default: the augmented view only."""
        return {"x": self.ctx.augment(x), "y": y}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """A scalar loss to minimise, and detached per-batch metrics (means over the batch)."""
        raise NotImplementedError

    def loss_and_backward(
        self,
        model: nn.Module,
        batch: Batch,
        backward: Callable[[torch.Tensor], None],
    ) -> tuple[torch.Tensor, Metrics]:
        """What training calls: :meth:`loss`'s value (detached) and metrics, its gradient taken
        by calling ``backward`` (the trainer's scaled backward) on scalars whose gradients sum
        to the loss's. The default calls it once on the loss; a method whose loss joins several
        forwards may call it per piece to free each graph early (DAT does)."""
        loss, metrics = self.loss(model, batch)
        backward(loss)
        return loss.detach(), metrics

    def after_step(self, batch: Batch) -> Metrics:
        """Called after the classifier's optimiser step; returns extra detached metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions, as a detached 0-dim tensor (no host sync)."""
    return (logits.detach().argmax(1) == y).float().mean()
