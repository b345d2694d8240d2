"""User code imported by name: modules that register models, methods, attacks or datasets.

``phaseguard --import MODULE`` imports a module before a command runs; a training run records
its modules in its config (``imports``), so every later command on the run (eval, analyze,
report, export, ``train --resume``) imports them again before loading it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path

from .config import load_yaml
from .errors import ConfigError, PhaseguardError
from .run_dir import RunDir


def import_modules(names: Iterable[str]) -> None:
    """Import each module by name; one that fails is a one-line error naming it."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # whatever the user's module raised: report it on one line
            reason = (str(exc).strip().splitlines() or [""])[0]
            raise PhaseguardError(
                f"cannot import module '{name}' ({type(exc).__name__}: {reason})"
            ) from None


def recorded_imports(target: str | Path) -> list[str]:
    """The ``imports`` of the run that ``target`` belongs to: a run folder, or a checkpoint in
    its ``checkpoints/``; nothing for any other file."""
    target = Path(target)
    root = target.parent.parent if target.parent.name == "checkpoints" else target
    config = RunDir(root).config
    if not config.is_file():
        return []
    tree = load_yaml(config.read_bytes(), f"config {config}")
    names = (tree.get("imports") or []) if isinstance(tree, dict) else []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{config}: imports must be a list of module names")
    return names
