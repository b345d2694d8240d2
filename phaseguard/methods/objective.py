"""A loss written once, as a sum of terms over branches, and evaluated in one graph or in pieces.

A *branch* is one forward of the classifier on one input (DAT's x, x', x_hat, x_hat'); a *term*
is a scalar function of some branches' logits. :func:`objective_loss` runs every branch and term
in one graph (one backward: AWP's proxy, DAT's generator objective); :func:`staged_backward`
takes the same gradient in pieces, back-propagating a branch's graph as soon as every term it
appears in is known, with those terms' gradient with respect to its logits, so that fewer branch
graphs are alive at once (DAT: two of four instead of four).

Both run the same forwards in the same order (same logits, BN statistics and loss value); the
weight gradients are the same sum, accumulated in another order (equal up to rounding). Terms
are evaluated, and their values summed, in the order they are listed; that order fixes the
rounding of the summed gradients in one graph, so a method keeps it once its numbers are
published.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..models import bn_branch
from .base import Backward


@dataclass(frozen=True)
class Branch:
    """One forward: ``input`` [B,C,H,W] through the model, on the split-BN branch ``bn`` (None:
    whichever is active)."""

    name: str
    input: Tensor
    bn: str | None = None


@dataclass(frozen=True)
class Term:
    """One summand of the loss: ``fn(*logits)`` of the named branches, a scalar."""

    branches: tuple[str, ...]
    fn: Callable[..., Tensor]


def _forward(model: nn.Module, branch: Branch) -> Tensor:
    context = contextlib.nullcontext() if branch.bn is None else bn_branch(model, branch.bn)
    with context:
        return model(branch.input).float()


def _total(values: Sequence[Tensor]) -> Tensor:
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def objective_loss(
    model: nn.Module,
    branches: Sequence[Branch],
    terms: Sequence[Term],
    constant: frozenset[str] = frozenset(),
) -> tuple[Tensor, dict[str, Tensor]]:
    """The sum of ``terms`` in one graph, and every branch's float logits [B, classes].

    Branches run in order; those named in ``constant`` without a graph (their logits enter the
    terms as constants; a branch no term uses runs for its BN statistics only)."""
    logits = {}
    for branch in branches:
        with torch.no_grad() if branch.name in constant else contextlib.nullcontext():
            logits[branch.name] = _forward(model, branch)
    return _total([t.fn(*(logits[n] for n in t.branches)) for t in terms]), logits


def _value_and_grads(term: Term, logits: dict[str, Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A term's value (detached) and its gradients with respect to its branches' logits,
    computed on detached copies: the branches' graphs are not touched."""
    leaves = [logits[n].detach().requires_grad_(True) for n in term.branches]
    with torch.enable_grad():
        value = term.fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves)


def staged_backward(
    model: nn.Module, branches: Sequence[Branch], terms: Sequence[Term], backward: Backward
) -> tuple[Tensor, dict[str, Tensor]]:
    """The gradient of the sum of ``terms`` taken in pieces through ``backward``; returns the
    loss (detached) and every branch's float logits.

    Every forward but the last runs inside ``backward.local()``; after each, the terms whose
    branches are all known are evaluated on detached logits, and each branch whose terms are
    all evaluated is back-propagated with their summed gradient (later branches first). The
    terms that need the last branch are evaluated on the graph and back-propagated with the
    remaining branches in one final piece.
    """
    logits: dict[str, Tensor] = {}
    grads: dict[str, Tensor] = {}
    values: dict[int, Tensor] = {}
    with backward.local():
        for branch in branches[:-1]:
            logits[branch.name] = _forward(model, branch)
            for i, term in enumerate(terms):
                if i in values or not set(term.branches) <= logits.keys():
                    continue
                values[i], term_grads = _value_and_grads(term, logits)
                for name, grad in zip(term.branches, term_grads, strict=True):
                    grads[name] = grads[name] + grad if name in grads else grad
            for name in reversed([b.name for b in branches if b.name in grads]):
                if all(i in values for i, t in enumerate(terms) if name in t.branches):
                    backward((logits[name] * grads.pop(name)).sum())
    logits[branches[-1].name] = _forward(model, branches[-1])
    on_graph = {
        i: t.fn(*(logits[n] for n in t.branches)) for i, t in enumerate(terms) if i not in values
    }
    pieces = list(on_graph.values()) + [
        (logits[b.name] * grads[b.name]).sum() for b in branches if b.name in grads
    ]
    backward(_total(pieces))
    values.update({i: v.detach() for i, v in on_graph.items()})
    return _total([values[i] for i in range(len(terms))]), logits
