"""One reader per dataset format; each maps a root (or None: the default places) to a Dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from phaseguard.data.dataset import Dataset
from phaseguard.data.readers.cifar import read_cifar10, read_cifar100
from phaseguard.data.readers.idx import read_fashion_mnist, read_mnist
from phaseguard.data.readers.npz import read_npz
from phaseguard.data.readers.svhn import read_svhn
from phaseguard.data.readers.tiny_imagenet import read_tiny_imagenet

Reader = Callable[[Path | None], Dataset]

READERS: dict[str, Reader] = {
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "svhn": read_svhn,
    "tiny-imagenet": read_tiny_imagenet,
    "mnist": read_mnist,
    "fashion-mnist": read_fashion_mnist,
    "npz": read_npz,
}
