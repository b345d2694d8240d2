"""The training methods by name: each registers its class under ``cls.name``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..config import AttackConfig, build_dataclass
from ..errors import ConfigError
from ..models import has_split_bn
from ..registry import Registry
from .base import Method, MethodContext

METHODS: Registry[type[Method]] = Registry("method", ConfigError)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``.

    Raises ConfigError if that name is already taken.
    """
    return METHODS.add(cls.name, cls)


def list_methods() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(METHODS.names())


def method_class(name: str) -> type[Method]:
    """The method class registered under ``name``; ConfigError names the known ones."""
    return METHODS.get(name)


def method_options(section: dict[str, Any]) -> Any:
    """The typed options of the method named in a config's ``method`` section."""
    cls = method_class(section["name"])
    values = {k: v for k, v in section.items() if k != "name"}
    return build_dataclass(cls.Options, values, "method.")


def create_method(
    name: str,
    model: nn.Module,
    *,
    num_classes: int,
    image_shape: tuple[int, int, int],
    attack: AttackConfig | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **options: Any,
) -> Method:
    """The training method ``name`` for the classifier ``model`` (on its device).

    Args:
        model: maps images [B, C, H, W] in [0, 1] to logits [B, num_classes]. A method that
            needs split BN (DAT) needs it converted first:
            ``model = phaseguard.models.convert_split_bn(model)``.
        image_shape: (C, H, W) of the training images.
        attack: the training attack's norm, eps, step and steps (default: linf, 8/255, 2/255,
            10 steps).
        augment: the training augmentation of un-augmented batches (default: none); the method
            applies it itself, since DAT also needs the un-augmented images.
        options: the method's own options (its ``Options`` dataclass, e.g. DAT's ``beta``).

    Raises:
        ConfigError: unknown method or option, or a method that needs split BN on a model
            without it.
    """
    cls = method_class(name)
    opts = method_options({"name": name, **options})
    if cls.wants_split_bn(opts) and not has_split_bn(model):
        raise ConfigError(
            f"method {name!r} needs split BatchNorm; convert the model first: "
            "model = phaseguard.models.convert_split_bn(model)"
        )
    ctx = MethodContext(
        model=model,
        attack_config=attack or AttackConfig(),
        num_classes=num_classes,
        image_shape=tuple(image_shape),
        device=next(model.parameters()).device,
    )
    if augment is not None:
        ctx.augment = augment
    return cls(ctx, opts)
