"""What a training method is: a small object that turns a batch into a loss.

The trainer (:class:`phaseguard.training.step.TrainingStep`) owns everything else: epochs,
optimisers, schedule, precision and gradient scaling, checkpoints, logs, DDP. Per batch it
calls, in this order::

    batch = method.prepare(x, y)           # augmentation, adversarial examples; no weight grads
    loss, metrics = method.loss_and_backward(model, batch, backward)
                                           # method.loss, its gradient taken through backward
    (trainer: classifier's optimiser step, and that of every joint trainable)
    loss_g = method.trainable_loss(name, batch)  # per trainable that is not joint
    (trainer: its backward, negated when it maximises, and its optimiser step)

``x`` is the un-augmented batch: a method applies ``ctx.augment`` itself, because DAT needs
both views (it mixes amplitudes of the raw image and augments the result).
``loss`` takes the model as an argument so that wrappers (AWP's perturbed proxy, DDP) can ask
for the same loss on another set of weights.

A method that trains modules of its own (DAT's amplitude generator) declares them with
:meth:`Method.trainables`; the trainer builds their optimisers, replicates them under DDP,
scales, steps and checkpoints them like the classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from ..config import AttackConfig

Batch = dict[str, torch.Tensor]
Metrics = dict[str, torch.Tensor]


@dataclass
class MethodContext:
    """What a method may use besides its options.

    ``model`` is the classifier without DDP (compiled when ``train.compile`` is on): attacks and
    eval-mode forwards use it. The training loss runs through the model :meth:`Method.loss`
    is given, which may be a DDP wrapper or AWP's proxy.
    """

    model: nn.Module
    attack_config: AttackConfig  # the training attack's norm, eps, step and steps
    num_classes: int
    image_shape: tuple[int, int, int]
    device: torch.device
    augment: Callable[[torch.Tensor], torch.Tensor] = lambda x: x  # the training crop/flip


@dataclass
class Trainable:
    """A module a method trains beside the classifier, with its optimiser settings.

    The trainer gives it an optimiser at a fixed learning rate (the classifier's schedule does
    not apply; :meth:`make_optimizer`: SGD, or AdamW with betas (momentum, 0.999) and decoupled
    weight decay), replicates it under DDP (``model``: what forwards call; the module itself
    when not distributed), scales its gradients under fp16 and checkpoints module and optimiser.

    ``joint``: its gradients come with the classifier's backward (e.g. through a gradient
    reversal) and it steps with the classifier; otherwise it descends, after the classifier's
    step, :meth:`Method.trainable_loss` (its negative when ``maximise``: an adversary).
    """

    module: nn.Module
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    optimizer: Literal["sgd", "adamw"] = "sgd"
    maximise: bool = False
    joint: bool = False
    model: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.module

    def make_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of ``module``'s parameters with these settings."""
        params = self.module.parameters()
        if self.optimizer == "adamw":
            return torch.optim.AdamW(
                params, lr=self.lr, betas=(self.momentum, 0.999), weight_decay=self.weight_decay
            )
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )


class Backward(Protocol):
    """The trainer's backward for a loss or a piece of it (scaled, outside autocast)."""

    def __call__(self, piece: torch.Tensor) -> None: ...

    def local(self) -> AbstractContextManager[None]:
        """Forwards and backwards inside accumulate gradients locally; the next backward
        outside synchronises everything accumulated (DDP's ``no_sync``; nothing otherwise)."""
        ...


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

    def trainables(self) -> dict[str, Trainable]:
        """The modules this method trains besides the classifier, by name (none by default)."""
        return {}

    def prepare(self, x: torch.Tensor, y: torch.Tensor) -> Batch:
        """Everything of a batch the loss needs, from the un-augmented x [B,C,H,W] in [0,1]
        and y [B] int64. The default: the augmented view only."""
        return {"x": self.ctx.augment(x), "y": y}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        """A scalar loss to minimise, and detached per-batch metrics (means over the batch)."""
        raise NotImplementedError

    def loss_and_backward(
        self, model: nn.Module, batch: Batch, backward: Backward
    ) -> tuple[torch.Tensor, Metrics]:
        """What training calls: :meth:`loss`'s value (detached) and metrics, its gradient taken
        by calling ``backward`` on scalars whose gradients sum to the loss's. The default calls
        it once on the loss; a method whose loss joins several forwards may call it per piece
        to free each graph early (DAT does, through :mod:`phaseguard.methods.objective`)."""
        loss, metrics = self.loss(model, batch)
        backward(loss)
        return loss.detach(), metrics

    def epoch_metrics(self) -> dict[str, float]:
        """Measurements the method makes once per epoch, after its last training iteration
        (logged as ``train_<key>``); none by default."""
        return {}

    def trainable_loss(self, name: str, batch: Batch) -> torch.Tensor:
        """The objective of the trainable ``name`` (not joint), on the classifier as updated by
        this iteration's step: minimised, or maximised when the trainable says so."""
        raise NotImplementedError(f"{self.name} declares no trainable {name!r}")


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of correct predictions, as a detached 0-dim tensor (no host sync)."""
    return (logits.detach().argmax(1) == y).float().mean()
