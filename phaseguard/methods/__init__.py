"""Training methods, by name: ``create_method(name, ctx, options)``, ``list_methods()``."""

from __future__ import annotations

from typing import Any

from ..config import build_dataclass
from ..errors import ConfigError
from .base import Batch, Method, MethodContext, Metrics

_METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    _METHODS[cls.name] = cls
    return cls


def list_methods() -> list[str]:
    return sorted(_METHODS)


def method_class(name: str) -> type[Method]:
    try:
        return _METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method '{name}' (known: {', '.join(list_methods())})") from None


def method_options(section: dict[str, Any]) -> Any:
    """The typed options of the method named in a config's ``method`` section."""
    cls = method_class(section["name"])
    values = {k: v for k, v in section.items() if k != "name"}
    return build_dataclass(cls.Options, values, "method.")


def create_method(section: dict[str, Any], ctx: MethodContext) -> Method:
    """Build the method a config's ``method`` section names, with its validated options."""
    return method_class(section["name"])(ctx, method_options(section))


from . import adversarial, dat, standard  # noqa: E402,F401  (register the built-in methods)

__all__ = [
    "Batch",
    "Method",
    "MethodContext",
    "Metrics",
    "create_method",
    "list_methods",
    "method_class",
    "method_options",
    "register_method",
]
