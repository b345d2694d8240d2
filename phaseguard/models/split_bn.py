"""Split BatchNorm (docs/dat.md section 6): two sets of BN statistics and affine parameters
per layer.

The main branch normalises clean and adversarial images (x, x'), the auxiliary branch the
amplitude-mixed ones (x_hat, x_hat'); convolutions and the head are shared. Inference and
evaluation use the main branch.

One mechanism serves every architecture: :func:`convert_split_bn` swaps each BatchNorm module
for a :class:`SplitBatchNorm` holding the original (``main``) and a copy of it (``aux``), and
:func:`bn_branch` selects the branch for a block of code. Because the two branches are two
ordinary modules, their statistics and parameters never touch each other, DistributedDataParallel
and optimizers see plain parameters, and torch.compile sees a plain attribute (it specialises
on the branch, one graph per branch).

State dict keys: ``<bn>.main.*`` and ``<bn>.aux.*``. To load a checkpoint of a model without
split BN, load it before converting (the auxiliary branch then starts as a copy of it); to export
to tools that do not know split BN, use :func:`merge_split_bn`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from phaseguard.errors import ModelError

BRANCHES = ("main", "aux")


def _check_branch(branch: str) -> str:
    if branch not in BRANCHES:
        raise ModelError(f"unknown BN branch {branch!r}; expected one of {', '.join(BRANCHES)}")
    return branch


class SplitBatchNorm(nn.Module):
    """A BatchNorm with a main and an auxiliary branch; ``branch`` says which one runs.

    Args:
        bn: any BatchNorm (1d/2d/3d, SyncBatchNorm ...). It becomes ``main`` as is (same
            parameter objects, so an optimizer built before the conversion still holds them);
            ``aux`` is a deep copy: same class, configuration, parameters, statistics, mode.

    The active branch starts as ``"main"``. Shapes are those of the wrapped BatchNorm
    (e.g. [B, C, H, W] -> [B, C, H, W] for BatchNorm2d).
    """

    def __init__(self, bn: _BatchNorm) -> None:
        super().__init__()
        if not isinstance(bn, _BatchNorm):
            raise ModelError(f"SplitBatchNorm wraps a BatchNorm module, got {type(bn).__name__}")
        self.main = bn
        self.aux = copy.deepcopy(bn)
        self._branch = "main"
        self.train(bn.training)

    @property
    def branch(self) -> str:
        """The active branch, ``"main"`` or ``"aux"``."""
        return self._branch

    @branch.setter
    def branch(self, value: str) -> None:
        self._branch = _check_branch(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aux(x) if self._branch == "aux" else self.main(x)

    def extra_repr(self) -> str:
        return f"branch={self._branch!r}"


def _swap(module: nn.Module, replace: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Replace submodules, the root included, top-down.

    ``replace(m)`` returns the module to put in m's place (m itself to keep it and not look
    inside) or None to keep m and recurse into its children. A module registered at several
    places gets the same replacement everywhere.
    """
    done: dict[int, nn.Module] = {}

    def visit(m: nn.Module) -> nn.Module:
        if id(m) not in done:
            new = replace(m)
            if new is None:
                new = m
                for name, child in list(m._modules.items()):
                    if child is not None and visit(child) is not child:
                        setattr(m, name, done[id(child)])
            done[id(m)] = new
        return done[id(m)]

    return visit(module)


def convert_split_bn(model: nn.Module) -> nn.Module:
    """Wrap every BatchNorm of ``model`` in a :class:`SplitBatchNorm`, in place; return the model.

    Idempotent: existing SplitBatchNorm modules are left as they are. If ``model`` itself is a
    BatchNorm, the returned module is a new SplitBatchNorm around it, so always use the result.
    The converted model computes exactly what it did before while the main branch is active.
    """

    def replace(m: nn.Module) -> nn.Module | None:
        if isinstance(m, SplitBatchNorm):
            return m
        return SplitBatchNorm(m) if isinstance(m, _BatchNorm) else None

    return _swap(model, replace)


def merge_split_bn(model: nn.Module) -> nn.Module:
    """Replace every :class:`SplitBatchNorm` by its main BatchNorm, in place; return the model.

    The inverse of :func:`convert_split_bn`: the auxiliary branches are dropped, and the state
    dict has the keys of a model that never had split BN (for export to other tools).
    """
    return _swap(model, lambda m: m.main if isinstance(m, SplitBatchNorm) else None)


def has_split_bn(model: nn.Module) -> bool:
    """True if ``model`` contains at least one :class:`SplitBatchNorm`."""
    return any(isinstance(m, SplitBatchNorm) for m in model.modules())


@contextmanager
def bn_branch(model: nn.Module, branch: str) -> Iterator[None]:
    """Run the enclosed code with every SplitBatchNorm of ``model`` on ``branch``.

    ``with bn_branch(model, "aux"): logits = model(x_hat)``. Each module's previous branch is
    restored on exit, exceptions included, so blocks nest. On a model without split BN,
    ``"main"`` does nothing and ``"aux"`` raises ModelError (there is no auxiliary branch to use).

    Raises:
        ModelError: ``branch`` is not ``"main"`` or ``"aux"``, or ``"aux"`` on a model without
            split BN.
    """
    _check_branch(branch)
    splits = [m for m in model.modules() if isinstance(m, SplitBatchNorm)]
    if branch == "aux" and not splits:
        raise ModelError(
            f"{type(model).__name__} has no split BatchNorm, so no auxiliary branch; build it "
            "with create_model(..., split_bn=True) or convert_split_bn(model)"
        )
    previous = [m.branch for m in splits]
    try:
        for m in splits:
            m.branch = branch
        yield
    finally:
        for m, old in zip(splits, previous):
            m.branch = old
