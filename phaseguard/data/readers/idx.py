"""MNIST and Fashion-MNIST in the IDX format, gzipped (``.gz``) or not.

An IDX file of unsigned bytes starts with the magic ``0x0000080<ndim>`` and ``ndim`` big-endian
uint32 sizes, followed by exactly ``prod(sizes)`` bytes.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from phaseguard.data.dataset import Dataset, check_fits_in_memory
from phaseguard.data.locate import find_dataset
from phaseguard.errors import DataError

_FILES = {
    "x_train": ("train-images-idx3-ubyte", 3),
    "y_train": ("train-labels-idx1-ubyte", 1),
    "x_test": ("t10k-images-idx3-ubyte", 3),
    "y_test": ("t10k-labels-idx1-ubyte", 1),
}
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")


def read_mnist(root: Path | None) -> Dataset:
    """Read MNIST: uint8 [N, 1, 28, 28] (60000 train, 10000 test), classes "0".."9"."""
    return _read("mnist", [str(d) for d in range(10)], root)


def read_fashion_mnist(root: Path | None) -> Dataset:
    """Read Fashion-MNIST: uint8 [N, 1, 28, 28] (60000 train, 10000 test), 10 named classes.

    Without a root it also looks in ``/usr/share/datasets/fashion-mnist`` (Debian package
    ``dataset-fashion-mnist``).
    """
    return _read(
        "fashion-mnist",
        FASHION_CLASSES,
        root,
        defaults=(FASHION_DEBIAN_ROOT,),
        advice="run 'apt-get install dataset-fashion-mnist' or "
        "'phaseguard data download fashion-mnist --root DIR', or pass --root / data.root",
    )


def _read(
    name: str,
    classes: list[str],
    root: Path | None,
    defaults: tuple[Path, ...] = (),
    advice: str | None = None,
) -> Dataset:
    files = find_dataset(
        name,
        root,
        _probe,
        "the 4 IDX files (train-images-idx3-ubyte[.gz], ...)",
        defaults=defaults,
        advice=advice,
    )
    arrays = {key: read_idx(files[key], ndim) for key, (_, ndim) in _FILES.items()}
    return Dataset.from_numpy(
        name,
        arrays["x_train"][:, None],
        arrays["y_train"],
        arrays["x_test"][:, None],
        arrays["y_test"],
        classes,
        files["x_train"].parent,
    )


def _probe(place: Path) -> dict[str, Path] | None:
    """The path of each file in ``place`` (uncompressed preferred), or None if one is missing."""
    files = {}
    for key, (stem, _) in _FILES.items():
        found = [p for p in (place / stem, place / f"{stem}.gz") if p.is_file()]
        if not found:
            return None
        files[key] = found[0]
    return files


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes with ``ndim`` dimensions into a uint8 array.

    The header is checked before the data is read: a size it claims that the file cannot hold
    (its dimensions multiplied, without overflow) is refused unread, and a gzipped file is
    decompressed no further than that size, so a corrupt header or a gzip bomb costs nothing.
    """
    header = 4 + 4 * ndim
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as file:
            head = file.read(header)
            shape, size = _header(path, head, ndim)
            if path.suffix == ".gz":
                # deflate expands at most 1032:1; a header claiming more lies or is a bomb
                limit = 1032 * path.stat().st_size + 1024
                if size > limit:
                    _mismatch(path, shape, size, f"at most {limit} bytes (it is gzipped)")
                check_fits_in_memory(size, str(path))
                data = _read_at_most(file, size + 1)
            else:
                held = path.stat().st_size - header
                if held != size:
                    _mismatch(path, shape, size, f"{held} bytes")
                check_fits_in_memory(size, str(path))
                data = file.read(size + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read {path} (truncated or corrupt?): {error}") from error
    if len(data) != size:
        _mismatch(path, shape, size, f"{len(data)} bytes")
    return np.frombuffer(data, np.uint8).reshape(shape)


def _header(path: Path, head: bytes, ndim: int) -> tuple[tuple[int, ...], int]:
    """The shape and data size an IDX header of ``ndim`` dimensions declares."""
    if len(head) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: {len(head)} bytes, shorter than its header")
    magic = int.from_bytes(head[:4], "big")
    if magic != 0x800 | ndim:
        raise DataError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes "
            f"(magic {magic:#010x}, expected {0x800 | ndim:#010x})"
        )
    shape = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return shape, math.prod(shape)  # Python integers: no overflow


def _mismatch(path: Path, shape: tuple[int, ...], size: int, held: str) -> None:
    raise DataError(
        f"{path} is truncated or padded: its header says {list(shape)} ({size} bytes) "
        f"but it holds {held}"
    )


def _read_at_most(file: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes, read in chunks (memory grows with the data, not the request)."""
    chunks, total = [], 0
    while total < limit and (chunk := file.read(min(1 << 24, limit - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
