"""Where a reader looks for a dataset's files.

With an explicit root a reader looks in ``root`` and then ``root/<name>`` (where
:func:`phaseguard.data.download` puts files). Without one it looks in
``$PHASEGUARD_DATA/<name>``, then ``./data/<name>``, then any reader-specific default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from phaseguard.data.registry import downloadable_datasets
from phaseguard.errors import DataError

T = TypeVar("T")


def find_dataset(
    name: str,
    root: Path | None,
    probe: Callable[[Path], T | None],
    expect: str,
    *,
    defaults: Sequence[Path] = (),
    advice: str | None = None,
) -> T:
    """Return ``probe(place)`` for the first candidate place where it is not None.

    ``probe`` receives paths that may not exist; ``expect`` describes what it looks for and
    ``advice`` how to get the data, both for the :class:`DataError` raised when nothing is found.
    """
    places = [root, root / name] if root is not None else [*_default_places(name), *defaults]
    for place in places:
        found = probe(place)
        if found is not None:
            return found
    if advice is None:
        advice = "pass --root / data.root"
        if name in downloadable_datasets():
            advice += f" or run 'phaseguard data download {name} --root DIR'"
    listed = ", ".join(str(place) for place in places)
    raise DataError(f"dataset '{name}' not found in {listed} (looked for {expect}); {advice}")


def _default_places(name: str) -> list[Path]:
    env = os.environ.get("PHASEGUARD_DATA")
    return ([Path(env) / name] if env else []) + [Path("data") / name]
