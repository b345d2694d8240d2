"""Model registry: architectures register a builder under a name; ``create_model`` builds one.

A builder is a function ``(num_classes: int, in_channels: int, **kwargs) -> nn.Module`` whose
keyword arguments (``depth``, ``width`` ...) are the architecture's options.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import nn

from phaseguard.errors import ModelError
from phaseguard.models.layers import Normalize, NormalizedModel, check_positive_int
from phaseguard.models.split_bn import convert_split_bn
from phaseguard.registry import Registry

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", ModelError)


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(num_classes, in_channels, **kwargs)`` under ``name``.

    Raises ModelError if ``name`` is already taken.
    """

    def decorator(builder: Builder) -> Builder:
        MODELS.add(name, builder)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(MODELS.names())


def _check_options(name: str, builder: Callable[..., nn.Module], kwargs: dict) -> None:
    params = list(inspect.signature(builder).parameters.values())[2:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    known = [p.name for p in params]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ModelError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(known) or 'none'}"
        )


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    split_bn: bool = False,
    **kwargs: object,
) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: one of :func:`list_models`.
        num_classes: number of logits (>= 1).
        in_channels: image channels (1 grayscale, 3 colour).
        normalize: ``(mean, std)``, one value per channel: the model then starts with a
            :class:`Normalize` layer and is a :class:`NormalizedModel` (state dict keys
            ``normalize.*`` and ``net.*``). Inputs are always images in [0, 1].
        split_bn: convert every BatchNorm to :class:`SplitBatchNorm` (main + auxiliary
            branch, DAT section 6); the main branch is active.
        **kwargs: architecture options (``depth``, ``widen_factor``, ``width``, ``dropout``).

    Returns:
        A module mapping [B, in_channels, H, W] to logits [B, num_classes], in train mode.

    Raises:
        ModelError: unknown name (the message lists the known ones), unknown option, or an
            invalid value.
    """
    builder = MODELS.get(name)
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    _check_options(name, builder, kwargs)
    norm = None
    if normalize is not None:
        if not isinstance(normalize, tuple | list) or len(normalize) != 2:
            raise ModelError("normalize must be a pair (mean, std)")
        norm = Normalize(*normalize)
        if norm.num_channels != in_channels:
            raise ModelError(
                f"normalize has {norm.num_channels} channel(s) but the model takes {in_channels}"
            )
    model = builder(num_classes, in_channels, **kwargs)
    if norm is not None:
        model = NormalizedModel(norm, model)
    if split_bn:
        model = convert_split_bn(model)
    return model
