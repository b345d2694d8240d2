"""SVHN (cropped digits) from the official ``train_32x32.mat`` and ``test_32x32.mat``.

Reading ``.mat`` files needs scipy, the ``svhn`` extra (``pip install 'phaseguard[svhn]'``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phaseguard.data.dataset import Dataset, describe
from phaseguard.data.locate import find_dataset
from phaseguard.errors import DataError
from phaseguard.extras import require

_FILES = ("train_32x32.mat", "test_32x32.mat")


def read_svhn(root: Path | None) -> Dataset:
    """Read SVHN: uint8 [N, 3, 32, 32] (73257 train, 26032 test), classes "0".."9".

    The files label digit 0 as 10; it becomes label 0.
    """
    folder = find_dataset("svhn", root, _probe, " and ".join(_FILES))
    (x_train, y_train), (x_test, y_test) = (_read_mat(folder / name) for name in _FILES)
    return Dataset.from_numpy(
        "svhn", x_train, y_train, x_test, y_test, [str(d) for d in range(10)], folder
    )


def _probe(place: Path) -> Path | None:
    return place if all((place / name).is_file() for name in _FILES) else None


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] in 0..9 of one .mat file."""
    scipy_io = require("scipy.io", "svhn", "the SVHN reader")
    try:
        mat = scipy_io.loadmat(path, variable_names=("X", "y"))
    except Exception as error:  # scipy raises many types for corrupt files; all mean "unreadable"
        reason = " ".join(str(error).split())
        raise DataError(f"cannot read {path} (truncated or not a .mat file?): {reason}") from error
    if "X" not in mat or "y" not in mat:
        raise DataError(f"{path} lacks the variable 'X' or 'y'")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise DataError(f"{path}: X must be uint8 [H, W, 3, N], got {describe(x)}")
    y = y.reshape(-1)
    if not np.issubdtype(y.dtype, np.integer) or len(y) != x.shape[3]:
        raise DataError(f"{path}: y must hold {x.shape[3]} integers, got {describe(mat['y'])}")
    bad = y[(y < 1) | (y > 10)]
    if bad.size:
        raise DataError(f"{path}: y contains {bad[0]}; SVHN labels are 1..10 (10 means digit 0)")
    return x.transpose(3, 2, 0, 1), (y % 10).astype(np.int64)
