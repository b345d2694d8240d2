"""One registry pattern for everything phaseguard looks up by name.

Models, training methods, attacks, evaluation attacks and datasets each keep their entries in a
:class:`Registry`: entries are added once under a unique name (``@registry.register(name)`` or
:meth:`Registry.add`), looked up with :meth:`Registry.get` and listed with
:meth:`Registry.names`. Each kind raises its own :class:`~phaseguard.errors.PhaseguardError`
subclass, so a user gets one line naming the problem and the known names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import PhaseguardError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order.

    Args:
        kind: what an entry is, singular, for messages (``"model"``, ``"dataset"``).
        error: the error class raised for a duplicate or unknown name.
    """

    def __init__(self, kind: str, error: type[PhaseguardError]) -> None:
        self.kind = kind
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` and return it.

        Raises:
            error: ``name`` is already registered.
        """
        if name in self._entries:
            raise self.error(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering the decorated object under ``name`` (see :meth:`add`)."""

        def decorator(entry: T) -> T:
            return self.add(name, entry)

        return decorator

    def get(self, name: str) -> T:
        """The entry registered under ``name``.

        Raises:
            error: unknown name; the message lists the known ones.
        """
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise self.error(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)
