"""One reader per dataset format, and the built-in datasets: each registered with its reader
and, where an official archive exists, its download source (files and published MD5s)."""

from __future__ import annotations

from phaseguard.data.readers.cifar import read_cifar10, read_cifar100
from phaseguard.data.readers.idx import read_fashion_mnist, read_mnist
from phaseguard.data.readers.npz import read_npz
from phaseguard.data.readers.svhn import read_svhn
from phaseguard.data.readers.tiny_imagenet import read_tiny_imagenet
from phaseguard.data.registry import RemoteFile, Source, register_dataset

register_dataset(
    "cifar10",
    read_cifar10,
    Source(
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
    ),
)
register_dataset(
    "cifar100",
    read_cifar100,
    Source(
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),),
    ),
)
register_dataset(
    "svhn",
    read_svhn,
    Source(
        "http://ufldl.stanford.edu/housenumbers/",
        (
            RemoteFile("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
            RemoteFile("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
        ),
    ),
)
register_dataset("tiny-imagenet", read_tiny_imagenet)
register_dataset("mnist", read_mnist)
register_dataset(
    "fashion-mnist",
    read_fashion_mnist,
    Source(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12e480ee83cd310"),
        ),
    ),
)
register_dataset("npz", read_npz)
