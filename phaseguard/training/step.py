"""One training iteration of any method, and the optimisers of everything it trains.

:class:`TrainingStep` holds the classifier's optimiser and gradient scaler and, for each module
the method declares (:meth:`~phaseguard.methods.base.Method.trainables`), an optimiser, a
gradient scaler (the classifier's for a joint trainable, whose gradients come with the
classifier's backward; its own otherwise) and its DDP replica. Training and the benchmarks call
it, so the benchmarks time exactly what training runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..methods import Batch, Method, Metrics
from ..methods.base import Trainable
from .distributed import DistInfo, replicate
from .precision import autocast, make_scaler


class ScaledBackward:
    """The :class:`~phaseguard.methods.base.Backward` the trainer hands a method: each piece
    scaled by the gradient scaler and back-propagated outside autocast. Under DDP, ``local()``
    is ``no_sync``, and the backward after it also reaches every parameter its graph does not
    (a zero term): DDP all-reduces only what the last backward reaches."""

    def __init__(self, model: nn.Module, scaler: torch.amp.GradScaler) -> None:
        self.model, self.scaler = model, scaler
        self.ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        self._accumulated = False

    def __call__(self, piece: torch.Tensor) -> None:
        if self.ddp and self._accumulated:
            params = [p for p in self.model.parameters() if p.requires_grad]
            piece = piece + 0 * sum(p.sum() for p in params)
            self._accumulated = False
        with torch.autocast(piece.device.type, enabled=False):
            self.scaler.scale(piece).backward()

    @contextlib.contextmanager
    def local(self) -> Iterator[None]:
        with self.model.no_sync() if self.ddp else contextlib.nullcontext():
            yield
        self._accumulated = True


@dataclass
class _Trained:
    trainable: Trainable
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler


class TrainingStep:
    """Runs iterations of ``method`` on ``model`` (what the loss runs through: the classifier,
    DDP-wrapped when distributed) with the classifier's ``optimizer``, in ``precision``.

    The method's trainables get their own optimisers (:meth:`Trainable.make_optimizer`) and are
    replicated under DDP when ``dist`` is enabled.
    """

    def __init__(
        self,
        method: Method,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        precision: str = "fp32",
        device: torch.device | None = None,
        dist: DistInfo | None = None,
    ) -> None:
        device = device or next(model.parameters()).device
        self.method, self.model, self.optimizer = method, model, optimizer
        self.precision, self.device = precision, device
        self.scaler = make_scaler(precision, device)
        self.trained: dict[str, _Trained] = {}
        for name, t in method.trainables().items():
            t.model = replicate(t.module, dist or DistInfo(), device)
            optimizer_t = t.make_optimizer()
            scaler = self.scaler if t.joint else make_scaler(precision, device)
            self.trained[name] = _Trained(t, optimizer_t, scaler)
        self.backward = ScaledBackward(model, self.scaler)

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weight_perturbation: Callable[[Batch], contextlib.AbstractContextManager] | None = None,
    ) -> tuple[torch.Tensor, Metrics]:
        """One iteration: prepare the batch, the classifier's loss and backward, the optimiser
        steps of the classifier and the joint trainables (inside AWP's weight perturbation when
        given), then each other trainable's objective, backward and step.

        x: un-augmented images [B,C,H,W] in [0,1]; y: int64 [B]. Returns the detached loss and
        the method's metrics, with ``<name>_loss`` per trainable that has an objective.
        """
        method, amp = self.method, lambda: autocast(self.precision, self.device)
        with amp():
            batch = method.prepare(x, y)
        perturbation = weight_perturbation(batch) if weight_perturbation else None
        with perturbation or contextlib.nullcontext():
            self.optimizer.zero_grad(set_to_none=True)
            for trained in self.trained.values():
                trained.optimizer.zero_grad(set_to_none=True)
            with amp():
                loss, metrics = method.loss_and_backward(self.model, batch, self.backward)
            self.scaler.step(self.optimizer)
            for trained in self.trained.values():
                if trained.trainable.joint:
                    self.scaler.step(trained.optimizer)
            self.scaler.update()
        for name, trained in self.trained.items():
            if trained.trainable.joint:
                continue
            with amp():
                objective = method.trainable_loss(name, batch)
            descend = -objective if trained.trainable.maximise else objective
            with torch.autocast(self.device.type, enabled=False):
                trained.scaler.scale(descend).backward()
            trained.scaler.step(trained.optimizer)
            trained.scaler.update()
            metrics[f"{name}_loss"] = objective.detach()
        return loss, metrics

    # -- state: stored under a checkpoint's "method" key ------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every trainable's module and optimiser (and gradient scaler, when it has its own
        and it is on), keyed ``name``, ``name_optimizer``, ``name_scaler``."""
        state: dict[str, Any] = {}
        for name, trained in self.trained.items():
            state[name] = trained.trainable.module.state_dict()
            state[f"{name}_optimizer"] = trained.optimizer.state_dict()
            if trained.scaler is not self.scaler and trained.scaler.is_enabled():
                state[f"{name}_scaler"] = trained.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        load_trainable_weights(self.method, state)
        for name, trained in self.trained.items():
            trained.optimizer.load_state_dict(state[f"{name}_optimizer"])
            if f"{name}_scaler" in state:
                trained.scaler.load_state_dict(state[f"{name}_scaler"])


def load_trainable_weights(method: Method, state: dict[str, Any]) -> None:
    """Load the weights of ``method``'s trainables from a checkpoint's "method" state."""
    for name, trainable in method.trainables().items():
        trainable.module.load_state_dict(state[name])
