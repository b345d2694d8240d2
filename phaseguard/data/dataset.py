"""The in-memory dataset every reader returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from phaseguard.errors import DataError


@dataclass
class Dataset:
    """Train and test images of one dataset, held as uint8 tensors on the CPU.

    Attributes:
        name: the registry name (``"cifar10"``, ...).
        x_train: uint8 ``[N, C, H, W]``, values 0..255, ``C`` in {1, 3}.
        y_train: int64 ``[N]``, values in ``[0, num_classes)``.
        x_test: uint8 ``[M, C, H, W]`` with the same ``C, H, W`` as ``x_train``.
        y_test: int64 ``[M]``.
        classes: class names; ``classes[i]`` names label ``i``.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]

    @classmethod
    def from_numpy(
        cls,
        name: str,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        classes: list[str],
        source: str | Path,
    ) -> Dataset:
        """Build and validate a dataset from uint8 ``[N, C, H, W]`` images and integer labels.

        ``source`` (the file or folder read) is named in validation errors.
        """
        dataset = cls(
            name,
            _tensor(x_train),
            _tensor(np.asarray(y_train).astype(np.int64)),
            _tensor(x_test),
            _tensor(np.asarray(y_test).astype(np.int64)),
            list(classes),
        )
        dataset.validate(source)
        return dataset

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(classes)``."""
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)

    def validate(self, source: str | Path | None = None) -> None:
        """Raise :class:`DataError` unless dtypes, shapes and labels are consistent.

        ``source`` (the file or folder the data came from) is named in the message.
        """
        where = f"dataset '{self.name}'" + (f" ({source})" if source else "")

        def fail(problem: str) -> None:
            raise DataError(f"{where}: {problem}")

        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
                fail(f"x_{split} must be a uint8 tensor [N, C, H, W], got {describe(x)}")
            if x.shape[1] not in (1, 3):
                fail(f"x_{split} has {x.shape[1]} channels; expected 1 or 3")
            if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.ndim != 1:
                fail(f"y_{split} must be an int64 tensor [N], got {describe(y)}")
            if len(x) != len(y):
                fail(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
            if len(x) == 0:
                fail(f"the {split} split is empty")
            if x.shape[2] < 1 or x.shape[3] < 1:
                fail(f"x_{split} images are {x.shape[2]}x{x.shape[3]} pixels; need at least 1x1")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            fail(
                f"train images are {list(self.x_train.shape[1:])} "
                f"but test images are {list(self.x_test.shape[1:])}"
            )
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            fail("classes must be a non-empty list of strings")
        for split in ("train", "test"):
            y = getattr(self, f"y_{split}")
            bad = y[(y < 0) | (y >= self.num_classes)]
            if bad.numel():
                fail(f"y_{split} contains label {int(bad[0])}, outside [0, {self.num_classes})")
        if self.num_classes < 2:
            fail(f"it has {self.num_classes} class; a classifier needs at least 2")
        present = torch.unique(self.y_train)
        if len(present) < 2:
            fail(
                f"every training label is {int(present[0])}; a classifier needs at least 2 "
                "classes in y_train"
            )


def _tensor(array: np.ndarray) -> Tensor:
    """Share ``array``'s memory when it is contiguous and writable, else copy it."""
    return torch.from_numpy(np.require(array, requirements=("C", "W")))


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """Raise :class:`DataError` if ``what`` (a file) would need more than this machine's
    physical memory once read or decompressed: refuse it rather than swap until killed."""
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise DataError(
            f"{what} would take {nbytes / 2**30:.1f} GiB in memory, more than this machine's "
            f"{memory / 2**30:.1f} GiB (corrupt, or a decompression bomb?)"
        )


def describe(value: object) -> str:
    """``dtype [shape]`` of an array or tensor, else its type name (for error messages)."""
    if isinstance(value, (Tensor, np.ndarray)):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__
