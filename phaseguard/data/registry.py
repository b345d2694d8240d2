"""Loading a dataset by name."""

from __future__ import annotations

from pathlib import Path

from phaseguard.data.dataset import Dataset
from phaseguard.data.readers import READERS
from phaseguard.errors import DataError


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts."""
    return list(READERS)


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """Read dataset ``name`` from ``root`` (a file or folder), or from the default places.

    ``root`` may be the dataset's file/folder itself or a folder holding ``<name>/``; without
    it the reader looks in ``$PHASEGUARD_DATA/<name>`` then ``./data/<name>``. Returns a
    validated :class:`Dataset` of uint8 ``[N, C, H, W]`` images and int64 labels.
    """
    if name not in READERS:
        raise DataError(f"unknown dataset '{name}'; known datasets: {', '.join(READERS)}")
    return READERS[name](None if root is None else Path(root).expanduser())
