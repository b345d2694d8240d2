"""The datasets by name: how each is read and, where it is published, where to download it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from phaseguard.data.dataset import Dataset
from phaseguard.errors import DataError
from phaseguard.registry import Registry

#: ``reader(root)``: the dataset read from ``root`` (a file or folder), or from the default
#: places when ``root`` is None.
Reader = Callable[[Path | None], Dataset]


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name (appended to the base URL) and published MD5."""

    name: str
    md5: str


@dataclass(frozen=True)
class Source:
    """Where a dataset is published: a base URL and the files under it."""

    base_url: str
    files: tuple[RemoteFile, ...]


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its reader and, if it can be downloaded, its source."""

    reader: Reader
    source: Source | None = None


DATASETS: Registry[DatasetEntry] = Registry("dataset", DataError)


def register_dataset(name: str, reader: Reader, source: Source | None = None) -> DatasetEntry:
    """Make dataset ``name`` loadable with ``reader`` (and downloadable from ``source``).

    Raises DataError if ``name`` is already taken.
    """
    return DATASETS.add(name, DatasetEntry(reader, source))


def list_datasets() -> list[str]:
    """Names :func:`load_dataset` accepts, in registration order."""
    return DATASETS.names()


def downloadable_datasets() -> list[str]:
    """Names of the datasets with a download source, in registration order."""
    return [name for name in DATASETS.names() if DATASETS.get(name).source is not None]


def load_dataset(name: str, root: str | Path | None = None) -> Dataset:
    """Read dataset ``name`` from ``root`` (a file or folder), or from the default places.

    ``root`` may be the dataset's file/folder itself or a folder holding ``<name>/``; without
    it the reader looks in ``$PHASEGUARD_DATA/<name>`` then ``./data/<name>``. Returns a
    validated :class:`Dataset` of uint8 ``[N, C, H, W]`` images and int64 labels.

    Raises:
        DataError: unknown name (the message lists the known ones), or the files are missing
            or malformed, or the reader's dataset fails :meth:`Dataset.validate`.
    """
    reader = DATASETS.get(name).reader
    dataset = reader(None if root is None else Path(root).expanduser())
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"the reader of dataset '{name}' returned a {type(dataset).__name__}, not a Dataset"
        )
    dataset.validate(root)  # a registered reader may build its Dataset without checking it
    return dataset
