"""Assembly: what a config describes, built in one place.

A device from its name, the classifier (split BN when its method needs it) and the training
method with its context. The trainer, loading, evaluation, the report, the benchmarks and the
tests all build through these functions, so a run is put together the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import Config
from .errors import ConfigError
from .methods import Method, create_method, method_class, method_options
from .models import create_model


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else the CPU) or a torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} but CUDA is not available")
    return device


def build_model(cfg: Config, num_classes: int, in_channels: int) -> nn.Module:
    """The classifier a config describes, in train mode on the CPU (split BN when its method
    needs it)."""
    normalize = None
    if cfg.model.normalize is not None:
        if len(cfg.model.normalize) != 2:
            raise ConfigError("model.normalize must be [mean, std]")
        normalize = (cfg.model.normalize[0], cfg.model.normalize[1])
    return create_model(
        cfg.model.name,
        num_classes=num_classes,
        in_channels=in_channels,
        normalize=normalize,
        split_bn=method_class(cfg.method["name"]).wants_split_bn(method_options(cfg.method)),
        **cfg.model.kwargs,
    )


def build_method(
    cfg: Config,
    model: nn.Module,
    num_classes: int,
    image_shape: tuple[int, int, int],
    *,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Method:
    """The training method ``cfg.method`` names, with its options and the attack section, for
    the classifier ``model`` (built by :func:`build_model`; compiled when training compiles it).

    ``augment``: the training crop/flip of un-augmented batches [B,C,H,W] in [0,1] (default:
    none). The trainer builds the optimisers of the method's trainables and replicates them
    (:class:`phaseguard.training.step.TrainingStep`).
    """
    options = {k: v for k, v in cfg.method.items() if k != "name"}
    return create_method(
        cfg.method["name"],
        model,
        num_classes=num_classes,
        image_shape=image_shape,
        attack=cfg.attack,
        augment=augment,
        **options,
    )
