"""Per-image correctness of a classifier, clean or under an attack, batch by batch; where a
model runs (its own device: models are never moved)."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable

import torch
from torch import nn
from tqdm import tqdm

from .errors import ConfigError


def as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1]: uint8 [..] (0..255) is divided by 255, float is cast.

    Same shape as ``x``; a new tensor for uint8, ``x`` itself when it is float32 already.
    """
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def model_device(model: nn.Module) -> torch.device | None:
    """The device of the model's first parameter or buffer; None when it has neither."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return None


def run_device(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """Where ``model`` runs: its own device (:func:`model_device`). The model is never moved.

    ``device``, when given, must name that device ("cuda" matches "cuda:0"); it only decides
    for a model without parameters or buffers. Default for such a model: the CPU.

    Raises:
        ConfigError: ``device`` differs from the model's device.
    """
    own = model_device(model)
    if device is None:
        return own or torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r} (cpu, cuda, cuda:N)") from None
    if own is None:
        return device
    if own.type != device.type or (device.index is not None and own.index != device.index):
        raise ConfigError(
            f"the model is on {own}, not on the requested device {device}; models are never "
            f"moved: move it yourself (model.to('{device}')) or leave the device unset"
        )
    return own


def progress_bar(total: int, desc: str | None) -> tqdm:
    """A transient tqdm bar on stderr over ``total`` images, labelled ``desc``; shown only when
    ``desc`` is given and stderr is a terminal (logs and pipes get nothing)."""
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        leave=False,
        dynamic_ncols=True,
        disable=desc is None or not sys.stderr.isatty(),
    )


def predict_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: str | None = None,
) -> torch.Tensor:
    """Which images the model classifies correctly, after ``attack`` if one is given.

    x: uint8 [N, C, H, W] (0..255) or float in [0, 1], any device; y: int64 [N]. Each batch is
    moved to the model's device (``device`` must agree, see :func:`run_device`; the model is
    never moved) as float32 in [0, 1] and, with an attack, replaced by ``attack(xb, yb)``.
    ``progress``: the label of a progress bar over the images, shown while stderr is a terminal.
    Returns bool [N] on the CPU; an image whose logits are not all finite counts as wrong. The
    model is put in eval mode for the forward and its mode restored.
    """
    device = run_device(model, device)
    was_training = model.training
    model.eval()
    out = []
    try:
        with progress_bar(len(y), progress) as bar:
            for start in range(0, len(y), batch_size):
                xb = x[start : start + batch_size].to(device)
                xb = as_unit_float(xb)
                yb = y[start : start + batch_size].to(device)
                if attack is not None:
                    xb = attack(xb, yb)
                with torch.no_grad():
                    logits = model(xb)
                # a row with NaN or infinite logits has no prediction (argmax would pick the NaN)
                out.append(((logits.argmax(1) == yb) & torch.isfinite(logits).all(1)).cpu())
                bar.update(len(yb))
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def nonfinite_logits(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> int:
    """How many images of x (uint8 [N, C, H, W] or float in [0, 1]) get a NaN or infinite logit
    from ``model`` in eval mode (its mode restored; run on its own device)."""
    device = run_device(model, device)
    was_training = model.training
    model.eval()
    bad = 0
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                logits = model(as_unit_float(x[start : start + batch_size].to(device)))
                bad += int((~torch.isfinite(logits).all(1)).sum())
    finally:
        model.train(was_training)
    return bad
