"""The training methods by name: each registers its class under ``cls.name``."""

from __future__ import annotations

from typing import Any

from ..config import build_dataclass
from ..errors import ConfigError
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


def create_method(section: dict[str, Any], ctx: MethodContext) -> Method:
    """Build the method a config's ``method`` section names, with its validated options."""
    return method_class(section["name"])(ctx, method_options(section))
