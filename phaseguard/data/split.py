"""Holding out a class-balanced validation set."""

from __future__ import annotations

import torch
from torch import Tensor

from phaseguard.errors import DataError


def split_validation(y: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices ``0..N-1`` into (train_index, val_index), both int64 and sorted.

    ``y`` is int64 ``[N]``. The validation set holds ``per_class`` randomly chosen images of
    every class present in ``y`` (a pure function of ``seed``); the rest are training images.
    Every class needs at least ``per_class + 1`` images; ``per_class=0`` gives an empty val set.
    """
    if per_class < 0:
        raise DataError(f"split_validation: per_class must be >= 0, got {per_class}")
    y = y.cpu()
    labels, counts = torch.unique(y, return_counts=True)
    short = counts <= per_class
    if short.any():
        label, count = int(labels[short][0]), int(counts[short][0])
        raise DataError(
            f"class {label} has {count} images; a validation split of {per_class} per class "
            f"(data.val_per_class) needs at least {per_class + 1}"
        )
    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(len(y), generator=generator)
    # Group the shuffled indices by class; each group keeps its random order.
    grouped = shuffled[torch.sort(y[shuffled], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(y)) - torch.repeat_interleave(starts, counts)
    in_val = torch.zeros(len(y), dtype=torch.bool)
    in_val[grouped[rank < per_class]] = True
    return in_val.logical_not().nonzero().flatten(), in_val.nonzero().flatten()
