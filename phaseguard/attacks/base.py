"""The base class of every attack, and the helpers they share (projection, random start, steps).

Contract of every attack in :mod:`phaseguard.attacks`:

- Inputs: images ``x``, a float tensor [B, C, H, W] in [0, 1]; labels ``y``, int64 [B].
- Device: the attack runs where the model's parameters are (as in torchattacks); ``x`` and ``y``
  are moved there, the model never is (a model without parameters runs where ``x`` is).
- Output: ``x_adv`` with the shape and dtype of ``x``, on the model's device, in [0, 1] and inside
  the eps-ball around ``x`` (linf: ``max |x_adv - x| <= eps``; l2: ``||x_adv - x||_2 <= eps`` per
  sample).
- The model runs in eval mode during the attack (the BN branch of a split-BN model is left as the
  caller set it); every module's training flag is restored afterwards, exceptions included.
- Parameters get no gradients: each parameter that required grad has ``requires_grad`` off during
  the attack and back on afterwards; ``.grad`` is never touched. Attacks need input gradients only.
- ``x`` is neither modified nor differentiated through: the result is detached, unless
  ``keep_graph_to_input=True`` (then the last projection runs around the caller's ``x``, see
  :meth:`Attack.__call__`).
- Autocast: the attack works inside ``torch.autocast`` (CPU bf16, CUDA fp16/bf16). Losses are
  computed on ``logits.float()``; the iterate stays in ``x``'s dtype. Gradient mode is switched on
  inside the attack, so calling it under ``torch.no_grad()`` or ``torch.inference_mode()`` works.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from phaseguard.errors import ConfigError, DataError
from phaseguard.predict import model_device

NORMS = ("linf", "l2")

#: A per-sample objective: float32 logits [B, classes] -> losses [B] (the attack ascends it).
Objective = Callable[[Tensor], Tensor]


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters that require grad stop requiring it inside, and require it again on exit
    (exceptions included): gradients reach the inputs only. ``.grad`` fields are not touched."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Run the enclosed code with ``model`` in eval mode, frozen parameters and grad enabled.

    Grad is enabled even inside ``torch.no_grad()`` or ``torch.inference_mode()``.

    On exit (exceptions included) every module gets back its own training flag and every
    parameter that required grad requires it again. ``.grad`` fields are not touched.
    """
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with frozen_parameters(model), torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values [B] to broadcast against ``like`` [B, ...]."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _l2(t: Tensor) -> Tensor:
    """Per-sample L2 norm of t [B, ...] -> [B], in t's dtype."""
    return t.flatten(1).norm(dim=1)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` (``norm`` "linf" or "l2"), then onto [0, 1].

    Shapes [B, ...], any float dtype. Differentiable in both arguments: where the ball constraint
    is active the result follows ``x``, elsewhere it follows ``x_adv`` (a point already inside
    passes its gradient to ``x_adv`` only).
    """
    if norm == "linf":
        x_adv = torch.clamp(x_adv, x - eps, x + eps)
    else:
        delta = x_adv - x
        scale = (eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        x_adv = x + delta * _per_sample(scale, delta)
    return x_adv.clamp(0.0, 1.0)


def random_init(x: Tensor, eps: float, norm: str) -> Tensor:
    """A random point of the eps-ball around ``x`` [B, ...] (not yet clipped to [0, 1]).

    linf: ``x + U(-eps, eps)`` per coordinate. l2: a uniformly random direction scaled to a radius
    ``U(0, eps)`` per sample. Uses the global torch generator.
    """
    if norm == "linf":
        return x + torch.empty_like(x).uniform_(-eps, eps)
    direction = torch.randn_like(x)
    direction = direction / _per_sample(_l2(direction).clamp_min(1e-12), x)
    radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) * eps
    return x + direction * _per_sample(radius, x)


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit ``norm`` for an input gradient [B, ...].

    linf: ``sign(grad)``; l2: ``grad / ||grad||_2`` per sample (zero where the gradient is zero).
    """
    if norm == "linf":
        return grad.sign()
    return grad / _per_sample(_l2(grad).clamp_min(1e-12), grad)


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is "linf" or "l2"; raise ConfigError otherwise."""
    if norm not in NORMS:
        raise ConfigError(f"unknown attack norm {norm!r}; expected one of {', '.join(NORMS)}")
    return norm


def check_nonnegative(name: str, value: float) -> float:
    """Return ``value`` if it is a finite number >= 0; raise ConfigError otherwise."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"attack option {name} must be a finite number >= 0, got {value!r}")
    return float(value)


def step_size(step: float | None, alpha: float | None, default: float) -> float:
    """The step size given as ``step`` or as ``alpha`` (torchattacks' name), else ``default``.

    Raises ConfigError when both are given.
    """
    if step is not None and alpha is not None:
        raise ConfigError(f"give the step size once: step={step!r} or alpha={alpha!r}, not both")
    if step is not None:
        return step
    return default if alpha is None else alpha


def check_count(name: str, value: int, minimum: int) -> int:
    """Return ``value`` if it is an int >= ``minimum``; raise ConfigError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"attack option {name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_batch(x: Tensor, y: Tensor) -> None:
    """Raise DataError unless x is a float batch [B, ...] in [0, 1] and y int64 labels [B]."""
    if not x.is_floating_point() or x.dim() < 2:
        raise DataError(
            f"attack input must be a float batch [B, C, H, W], got {x.dtype} {tuple(x.shape)}"
        )
    if y.dtype != torch.int64 or y.shape != x.shape[:1]:
        raise DataError(
            f"attack labels must be int64 [{x.shape[0]}], got {y.dtype} {tuple(y.shape)}"
        )
    # The range check reads the tensor on the host: free on the CPU, but a sync per call on an
    # accelerator, where it would stall every training step; there only shapes are checked.
    if x.numel() and x.device.type == "cpu":
        lo, hi = torch.aminmax(x.detach())
        if bool((lo < 0) | (hi > 1)):
            raise DataError(
                f"attack inputs must lie in [0, 1], got [{lo.item():.4g}, {hi.item():.4g}]; "
                "normalisation belongs inside the model"
            )


class Attack:
    """Base class: an attack maps (x [B, C, H, W] in [0, 1], y int64 [B]) to x_adv.

    Subclasses implement :meth:`perturb`; :meth:`__call__` wraps it in the contract of this
    package (module docstring): eval mode restored exactly, parameters frozen, result projected
    onto the eps-ball around ``x`` and [0, 1], same shape and dtype as ``x``.

    Args:
        model: classifier mapping [B, C, H, W] in [0, 1] to logits [B, classes].
        eps: radius of the threat model's ball (8/255 is the CIFAR linf protocol).
        norm: "linf" or "l2".
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "linf") -> None:
        self.model = model
        self.eps = check_nonnegative("eps", eps)
        self.norm = check_norm(norm)

    def __call__(self, x: Tensor, y: Tensor, *, keep_graph_to_input: bool = False) -> Tensor:
        """Attack the batch: x [B, C, H, W] in [0, 1], y int64 [B] -> x_adv like x, in the ball,
        on the model's device.

        With ``keep_graph_to_input=True`` the final projection onto the ball runs around the
        caller's (non-detached) ``x``, as in DAT's EAEG: gradients of a loss on x_adv reach x
        where the ball constraint is active (|x_adv - x| = eps after the last step), and nowhere
        else; the attack's own steps stay detached.
        """
        return self._attack(x, y, keep_graph_to_input, self.perturb)

    def _attack(
        self,
        x: Tensor,
        y: Tensor,
        keep_graph_to_input: bool,
        perturb: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        check_batch(x, y)
        device = model_device(self.model)
        if device is not None:  # no copy when x and y are there already
            x, y = x.to(device), y.to(device)
        with attack_mode(self.model):
            candidate = perturb(x.detach(), y)
        with torch.set_grad_enabled(keep_graph_to_input and torch.is_grad_enabled()):
            center = x if keep_graph_to_input else x.detach()
            return project(candidate.detach().to(x.dtype), center, self.eps, self.norm)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        """The attack proper, called in eval mode with frozen parameters and grad enabled.

        x: detached [B, C, H, W] in [0, 1]; y: int64 [B]. Returns the final iterate before its
        last projection (the caller projects it onto the ball around x and onto [0, 1]).
        """
        raise NotImplementedError

    def _input_grad(self, x_adv: Tensor, objective: Objective) -> Tensor:
        """Gradient of ``objective(model(x_adv).float()).sum()`` w.r.t. x_adv [B, ...]."""
        x_adv = x_adv.detach().requires_grad_(True)
        loss = objective(self.model(x_adv).float()).sum()
        (grad,) = torch.autograd.grad(loss, x_adv)
        return grad

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "model")
        return f"{type(self).__name__}({options})"
