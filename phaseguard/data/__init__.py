"""Datasets as uint8 tensors, their readers and downloads, validation splits and batching.

``load_dataset(name, root)`` returns a :class:`Dataset`; :class:`BatchLoader` turns its images
into float32 batches in [0, 1] on the training device, with optional crop/flip augmentation.
:func:`register_dataset` adds a dataset (reader and download source) to the registry that
:mod:`.readers` fills with the built-in ones.
"""

from phaseguard.data import readers  # noqa: F401  (registers the built-in datasets)
from phaseguard.data.augment import random_crop_flip
from phaseguard.data.dataset import Dataset
from phaseguard.data.download import download
from phaseguard.data.loader import BatchLoader
from phaseguard.data.registry import list_datasets, load_dataset, register_dataset
from phaseguard.data.split import split_validation

__all__ = [
    "BatchLoader",
    "Dataset",
    "download",
    "list_datasets",
    "load_dataset",
    "random_crop_flip",
    "register_dataset",
    "split_validation",
]
