"""Any image classification data saved with ``np.savez``: a file with ``x_train, y_train,
x_test, y_test`` and optionally ``classes``.

Images may be ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]`` with ``C`` in {1, 3} (when
both axis 1 and axis 3 could be channels, ``[N, C, H, W]`` wins), uint8 or float in [0, 1]
(scaled by 255 and rounded). Labels are integers, ``[N]`` or ``[N, 1]``. Without ``classes``
the classes are named "0".."k-1" with k = the largest label + 1, at most the number of training
labels (a stray huge label is an error, not a billion class names).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from phaseguard.data.dataset import Dataset, check_fits_in_memory, describe
from phaseguard.data.locate import find_dataset
from phaseguard.errors import DataError

_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(root: Path | None) -> Dataset:
    """Read a ``.npz`` file, or the only ``.npz`` file in a folder (loaded without pickle)."""
    path = find_dataset(
        "npz", root, _probe, "a .npz file, or a folder holding exactly one, with x_train, ..."
    )
    try:
        with zipfile.ZipFile(path) as members:
            check_fits_in_memory(sum(m.file_size for m in members.infolist()), str(path))
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        reason = " ".join(str(error).split())
        raise DataError(f"cannot read {path} as an .npz of plain arrays: {reason}") from error
    except MemoryError:
        raise DataError(
            f"cannot read {path}: its arrays claim more memory than there is (corrupt?)"
        ) from None
    missing = [key for key in _KEYS if key not in arrays]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)} (it holds {', '.join(arrays)})")
    x_train, x_test = (_images(arrays[key], key, path) for key in ("x_train", "x_test"))
    y_train, y_test = (_labels(arrays[key], key, path) for key in ("y_train", "y_test"))
    if "classes" in arrays:
        classes = _classes(arrays["classes"], path)
    else:
        if not len(y_train):
            raise DataError(f"{path}: the train split is empty (y_train holds no labels)")
        top = max(int(y_train.max(initial=0)), int(y_test.max(initial=0)))
        if top >= len(y_train):  # k classes need at least k training images
            raise DataError(
                f"{path}: the largest label is {top} but y_train holds only {len(y_train)} "
                "labels; labels must number the classes 0..k-1 (or add a 'classes' array "
                "naming them)"
            )
        classes = [str(label) for label in range(top + 1)]
    return Dataset.from_numpy("npz", x_train, y_train, x_test, y_test, classes, path)


def _probe(place: Path) -> Path | None:
    if place.is_file() and place.suffix == ".npz":
        return place
    found = sorted(place.glob("*.npz")) if place.is_dir() else []
    return found[0] if len(found) == 1 else None


def _images(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """uint8 [N, C, H, W] from any accepted layout and dtype."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"{path}: '{key}' has shape {list(x.shape)}; expected [N, H, W], [N, H, W, C] "
            "or [N, C, H, W] with C in {1, 3}"
        )
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{path}: '{key}' is float with NaN or infinite values")
        if x.size and not (x.min() >= 0 and x.max() <= 1):
            raise DataError(f"{path}: '{key}' is float but not within [0, 1]")
        return np.rint(x * 255).astype(np.uint8)
    if x.dtype != np.uint8:
        raise DataError(f"{path}: '{key}' is {x.dtype}; expected uint8 or float in [0, 1]")
    return x


def _labels(y: np.ndarray, key: str, path: Path) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim not in (1, 2) or y.size != len(y):
        raise DataError(f"{path}: '{key}' must be integer labels [N] or [N, 1], got {describe(y)}")
    y = y.reshape(-1)
    if y.dtype.kind == "u" and y.size and int(y.max()) >= 2**63:
        raise DataError(f"{path}: '{key}' contains label {int(y.max())}, too large for a class")
    return y


def _classes(classes: np.ndarray, path: Path) -> list[str]:
    if classes.ndim != 1 or classes.dtype.kind not in "US":
        raise DataError(f"{path}: 'classes' must be a 1-d string array, got {describe(classes)}")
    return [c.decode(errors="replace") if isinstance(c, bytes) else c for c in classes.tolist()]
