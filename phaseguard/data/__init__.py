"""Datasets as uint8 tensors, their readers and downloads, validation splits and batching.

``load_dataset(name, root)`` returns a :class:`Dataset`; :class:`BatchLoader` turns its images
into float32 batches in [0, 1] on the training device, with optional crop/flip augmentation.
"""

from phaseguard.data.augment import random_crop_flip
from phaseguard.data.dataset import Dataset
from phaseguard.data.download import download
from phaseguard.data.loader import BatchLoader
from phaseguard.data.registry import list_datasets, load_dataset
from phaseguard.data.split import split_validation

__all__ = [
    "BatchLoader",
    "Dataset",
    "download",
    "list_datasets",
    "load_dataset",
    "random_crop_flip",
    "split_validation",
]
