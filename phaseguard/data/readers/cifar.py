"""CIFAR-10 and CIFAR-100 in the official python-pickle format.

Accepted roots: the ``.tar.gz`` archive (read without extracting), the extracted folder
(``cifar-10-batches-py`` / ``cifar-100-python``), or a folder holding either. Any number of
images per batch is accepted, and for CIFAR-10 any number of ``data_batch_<k>`` files.
The pickles are read with :mod:`phaseguard.data.readers.safe_pickle`, never ``pickle.load``.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from phaseguard.data.dataset import Dataset, check_fits_in_memory, describe
from phaseguard.data.locate import find_dataset
from phaseguard.data.readers.safe_pickle import load_pickle
from phaseguard.errors import DataError


@dataclass(frozen=True)
class _Layout:
    name: str
    archive: str
    folder: str
    train: re.Pattern[str]
    train_hint: str
    test: str
    meta: str
    label_key: str
    names_key: str


_CIFAR10 = _Layout(
    name="cifar10",
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    train=re.compile(r"data_batch_\d+"),
    train_hint="data_batch_<k>",
    test="test_batch",
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
)
_CIFAR100 = _Layout(
    name="cifar100",
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    train=re.compile("train"),
    train_hint="train",
    test="test",
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)


def read_cifar10(root: Path | None) -> Dataset:
    """Read CIFAR-10: uint8 [N, 3, 32, 32] (50000 train, 10000 test), 10 classes."""
    return _read(_CIFAR10, root)


def read_cifar100(root: Path | None) -> Dataset:
    """Read CIFAR-100 with its 100 fine labels: uint8 [N, 3, 32, 32]."""
    return _read(_CIFAR100, root)


def _read(layout: _Layout, root: Path | None) -> Dataset:
    source = find_dataset(
        layout.name,
        root,
        lambda place: _probe(layout, place),
        f"{layout.archive} or {layout.folder}/",
    )
    files = _members(layout, source)
    train_names = sorted((n for n in files if layout.train.fullmatch(n)), key=lambda n: (len(n), n))
    missing = [name for name in (layout.meta, layout.test) if name not in files]
    missing += [] if train_names else [layout.train_hint]
    if missing:
        raise DataError(f"{source} lacks {', '.join(f'{layout.folder}/{m}' for m in missing)}")
    meta = _batch_dict(files, layout.meta, source)
    names = _field(meta, layout.names_key, layout.meta, source)
    if not isinstance(names, list | tuple | np.ndarray) or not all(
        isinstance(name, str | bytes) for name in names
    ):
        raise DataError(
            f"{source}: {layout.meta} '{layout.names_key}' must be a list of class names, "
            f"got {describe(names)}"
        )
    classes = [_text(name) for name in names]
    train = [_batch(files, name, layout, source) for name in train_names]
    x_test, y_test = _batch(files, layout.test, layout, source)
    return Dataset.from_numpy(
        layout.name,
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
        classes,
        source,
    )


def _probe(layout: _Layout, place: Path) -> Path | None:
    if place.is_file() and place.name.endswith((".tar.gz", ".tgz")):
        return place
    for candidate in (place, place / layout.folder):
        if (candidate / layout.meta).is_file():
            return candidate
    archive = place / layout.archive
    return archive if archive.is_file() else None


def _members(layout: _Layout, source: Path) -> dict[str, bytes]:
    """The raw bytes of the batch and meta files, by file name."""

    def wanted(name: str) -> bool:
        return name in (layout.meta, layout.test) or bool(layout.train.fullmatch(name))

    if source.is_dir():
        try:
            found = [p for p in source.iterdir() if wanted(p.name)]
            for path in found:
                if not path.is_file():
                    raise DataError(f"{path} is not a regular file")
            check_fits_in_memory(sum(p.stat().st_size for p in found), str(source))
            return {p.name: p.read_bytes() for p in found}
        except OSError as error:
            raise DataError(f"cannot read {source}: {error}") from error
    files, total = {}, 0
    try:
        with tarfile.open(source, "r:gz") as archive:
            for member in archive:
                path = PurePosixPath(member.name)
                if member.isfile() and path.parent.name == layout.folder and wanted(path.name):
                    total += member.size
                    check_fits_in_memory(total, str(source))
                    files[path.name] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(f"{source} is not a readable .tar.gz (truncated?): {error}") from error
    return files


def _batch(
    files: dict[str, bytes], name: str, layout: _Layout, source: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] of one batch file."""
    batch = _batch_dict(files, name, source)
    data = _field(batch, "data", name, source)
    labels = _field(batch, layout.label_key, name, source)
    if isinstance(labels, list) and all(isinstance(v, (int, np.integer)) for v in labels):
        try:
            labels = np.array(labels, dtype=np.int64)
        except OverflowError:
            raise DataError(f"{source}: {name} holds a label too large for a class") from None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3 * 32 * 32)
    ):
        raise DataError(f"{source}: {name} 'data' must be uint8 [N, 3072], got {describe(data)}")
    if not (
        isinstance(labels, np.ndarray)
        and np.issubdtype(labels.dtype, np.integer)
        and labels.shape == (len(data),)
    ):
        raise DataError(
            f"{source}: {name} '{layout.label_key}' must be {len(data)} integers, "
            f"got {describe(labels)}"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _batch_dict(files: dict[str, bytes], name: str, source: Path) -> dict[str, object]:
    """Unpickle one file into a dict with str keys (the official files have bytes keys)."""
    content = load_pickle(files[name], f"{source}/{name}")
    if not isinstance(content, dict):
        raise DataError(f"{source}: {name} holds a {type(content).__name__}, expected a dict")
    return {_text(key): value for key, value in content.items()}


def _field(batch: dict[str, object], key: str, name: str, source: Path) -> object:
    if key not in batch:
        raise DataError(f"{source}: {name} has no '{key}' entry (it has {sorted(batch)})")
    return batch[key]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
