"""Tiny-ImageNet-200 from the official ``tiny-imagenet-200/`` folder; its val split is the test set.

Layout: ``wnids.txt`` (one WordNet id per class, in label order), ``words.txt`` (names),
``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``.
Decoding the 110000 JPEGs takes minutes, so the decoded arrays are cached in an ``.npz`` beside
the folder (``tiny-imagenet-200.phaseguard-cache.npz``) or, if that folder is read-only, under
``$XDG_CACHE_HOME/phaseguard`` (default ``~/.cache/phaseguard``). The cache is rebuilt when the
number of images or the modification time of an annotation file changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from phaseguard.data.dataset import Dataset
from phaseguard.data.locate import find_dataset
from phaseguard.errors import DataError

_FOLDER = "tiny-imagenet-200"
_SIZE = 64
_ANNOTATIONS = ("wnids.txt", "words.txt", "val/val_annotations.txt")


def read_tiny_imagenet(root: Path | None) -> Dataset:
    """Read Tiny-ImageNet: uint8 [N, 3, 64, 64] (100000 train, 10000 test), 200 classes."""
    folder = find_dataset("tiny-imagenet", root, _probe, f"{_FOLDER}/ with wnids.txt")
    wnids = _read_wnids(folder / "wnids.txt")
    train_files, y_train = _train_files(folder, wnids)
    test_files, y_test = _val_files(folder, wnids)
    key = _cache_key(folder, len(train_files), len(test_files))
    images = _load_cache(folder, key)
    if images is None:
        images = _decode(train_files), _decode(test_files)
        _save_cache(folder, key, *images)
    return Dataset.from_numpy(
        "tiny-imagenet", images[0], y_train, images[1], y_test, _class_names(folder, wnids), folder
    )


def _probe(place: Path) -> Path | None:
    for candidate in (place, place / _FOLDER):
        if (candidate / "wnids.txt").is_file():
            return candidate
    return None


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from error


def _read_wnids(path: Path) -> list[str]:
    wnids = [line.strip() for line in _lines(path)]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{path} must list distinct class ids, one per line")
    return wnids


def _class_names(folder: Path, wnids: list[str]) -> list[str]:
    """The first name ``words.txt`` gives each wnid, else the wnid itself."""
    words = folder / "words.txt"
    names = {}
    for line in _lines(words) if words.is_file() else []:
        wnid, _, text = line.partition("\t")
        names[wnid] = text.split(",")[0].strip()
    return [names.get(wnid) or wnid for wnid in wnids]


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        if not images.is_dir():
            raise DataError(f"missing folder {images} for class {wnid} listed in wnids.txt")
        found = sorted(images.glob("*.JPEG"))
        files += found
        labels += [label] * len(found)
    return files, np.array(labels, dtype=np.int64)


def _val_files(folder: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    annotations = folder / "val" / "val_annotations.txt"
    index = {wnid: label for label, wnid in enumerate(wnids)}
    files, labels = [], []
    for number, line in enumerate(_lines(annotations), 1):
        name, _, rest = line.partition("\t")
        wnid = rest.split("\t")[0]
        if wnid not in index:
            raise DataError(f"{annotations} line {number}: class {wnid!r} is not in wnids.txt")
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise DataError(f"{annotations} line {number}: {name!r} is not a file name")
        files.append(folder / "val" / "images" / name)
        labels.append(index[wnid])
    return files, np.array(labels, dtype=np.int64)


def _decode(files: list[Path]) -> np.ndarray:
    """Decode 64x64 JPEGs (in parallel threads) into uint8 [N, 3, 64, 64]."""
    out = np.empty((len(files), 3, _SIZE, _SIZE), dtype=np.uint8)

    def decode_one(i: int) -> None:
        try:
            with Image.open(files[i]) as image:
                if image.size != (_SIZE, _SIZE):
                    raise DataError(f"{files[i]} is {image.size[0]}x{image.size[1]}, not 64x64")
                out[i] = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"cannot decode {files[i]}: {error}") from error

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(decode_one, range(len(files))))
    return out


def _cache_key(folder: Path, n_train: int, n_test: int) -> str:
    stamps = [
        str((folder / name).stat().st_mtime_ns) if (folder / name).is_file() else "-"
        for name in _ANNOTATIONS
    ]
    return f"v1 {n_train} {n_test} {' '.join(stamps)}"


def _cache_paths(folder: Path) -> list[Path]:
    """Beside the folder first, then in the user cache (named by a hash of the folder path)."""
    folder = folder.resolve()
    cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(os.fsencode(folder), usedforsecurity=False).hexdigest()
    return [
        folder.parent / f"{folder.name}.phaseguard-cache.npz",
        cache_home / "phaseguard" / f"tiny-imagenet-{digest[:16]}.npz",
    ]


def _load_cache(folder: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached (x_train, x_test) if a cache with this key exists; a bad cache is ignored."""
    for path in _cache_paths(folder):
        try:
            with np.load(path, allow_pickle=False) as cache:
                if str(cache["key"]) == key:
                    return cache["x_train"], cache["x_test"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            continue
    return None


def _save_cache(folder: Path, key: str, x_train: np.ndarray, x_test: np.ndarray) -> None:
    """Write the cache atomically to the first writable place; warn if there is none."""
    for path in _cache_paths(folder):
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with partial.open("wb") as file:
                np.savez(file, key=np.array(key), x_train=x_train, x_test=x_test)
            os.replace(partial, path)
            return
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)
    warnings.warn(f"could not cache the decoded {folder} anywhere", stacklevel=3)
