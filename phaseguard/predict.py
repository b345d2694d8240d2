"""Per-image correctness of a classifier, clean or under an attack, batch by batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 [..] (0..255) is divided by 255, float is cast.

    Same shape as ``x``; a new tensor for uint8, ``x`` itself when it is float32 already.
    """
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def predict_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Which images the model classifies correctly, after ``attack`` if one is given.

    x: uint8 [N, C, H, W] (0..255) or float in [0, 1]; y: int64 [N]. Each batch is moved to
    ``device`` as float32 in [0, 1] and, with an attack, replaced by ``attack(xb, yb)``.
    Returns bool [N] on the CPU. The model is put in eval mode for the forward and its mode
    restored.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(y), batch_size):
            xb = x[start : start + batch_size].to(device)
            xb = as_unit_float(xb)
            yb = y[start : start + batch_size].to(device)
            if attack is not None:
                xb = attack(xb, yb)
            with torch.no_grad():
                out.append((model(xb).argmax(1) == yb).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)
