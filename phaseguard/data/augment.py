"""Batched, vectorised data augmentation on any device."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(
    x: Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Random crop with zero padding and random horizontal flip, drawn per sample.

    ``x`` is ``[B, C, H, W]`` of any dtype (uint8 or float) on any device. Each sample is
    zero-padded by ``padding`` pixels on every side, cropped back to ``H x W`` at a uniformly
    random offset in ``[0, 2 * padding]`` per axis and, if ``flip``, mirrored left-right with
    probability 1/2. Returns a new tensor ``[B, C, H, W]`` of ``x``'s dtype and device.
    ``generator``, if given, must live on ``x.device``.
    """
    if x.ndim != 4 or padding < 0:
        raise ValueError(f"need x [B, C, H, W] and padding >= 0; got {list(x.shape)}, {padding}")
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    draw = {"generator": generator, "device": x.device}
    top = torch.randint(0, 2 * padding + 1, (b, 1), **draw)
    left = torch.randint(0, 2 * padding + 1, (b, 1), **draw)
    rows = top + torch.arange(h, device=x.device)  # [B, H]
    cols = left + torch.arange(w, device=x.device)  # [B, W]
    if flip:
        mirrored = torch.randint(0, 2, (b, 1), **draw).bool()
        cols = torch.where(mirrored, cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def with_padding(augment: Callable[[Tensor], Tensor], padding: int) -> Callable[[Tensor], Tensor]:
    """The crop/flip ``augment`` with its zero padding set to ``padding``, everything else shared.

    ``augment`` is a method of an object that holds its crop's padding in an attribute
    ``padding`` (:meth:`~phaseguard.data.BatchLoader.augment`). The result is that method on a
    shallow copy of the object with ``padding`` replaced: the same flip setting, the same
    on/off switch and the same random generator (the draws continue the original's stream,
    three per sample as ever, offsets now in ``[0, 2 * padding]``); the object is not changed.

    Raises:
        TypeError: ``augment`` is not such a method.
        ValueError: ``padding < 0``.
    """
    owner = getattr(augment, "__self__", None)
    if not isinstance(getattr(owner, "padding", None), int):
        raise TypeError(
            f"{augment!r} is not the method of an augmentation with a 'padding' attribute "
            "(such as BatchLoader.augment)"
        )
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    other = copy.copy(owner)
    other.padding = padding
    return getattr(other, augment.__name__)
