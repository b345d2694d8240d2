"""Batched, vectorised data augmentation on any device."""

from __future__ import annotations

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
