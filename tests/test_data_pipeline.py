"""Validation split, crop/flip augmentation and the batch loader, on real Fashion-MNIST."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from phaseguard.data import BatchLoader, Dataset, load_dataset, random_crop_flip, split_validation
from phaseguard.errors import DataError


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    return load_dataset("fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))


# --- split_validation -----------------------------------------------------------------------


def test_split_validation_is_balanced_and_complete(fashion: Dataset) -> None:
    y = fashion.y_test
    train, val = split_validation(y, per_class=25, seed=0)
    assert train.dtype == val.dtype == torch.int64
    assert torch.bincount(y[val], minlength=10).tolist() == [25] * 10
    assert len(train) + len(val) == len(y)
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(len(y)))
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    again_train, again_val = split_validation(y, per_class=25, seed=0)
    assert torch.equal(again_train, train) and torch.equal(again_val, val)
    assert not torch.equal(split_validation(y, per_class=25, seed=1)[1], val)


def test_split_validation_edge_cases() -> None:
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    train, val = split_validation(y, per_class=0, seed=0)
    assert torch.equal(train, torch.arange(7)) and val.numel() == 0 and val.dtype == torch.int64
    train, val = split_validation(y, per_class=1, seed=3)
    assert torch.bincount(y[val]).tolist() == [1, 1, 1] and len(train) == 4
    with pytest.raises(DataError, match="class 0 has 2 images; .* needs at least 3"):
        split_validation(y, per_class=2, seed=0)


# --- random_crop_flip -----------------------------------------------------------------------


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images(fashion: Dataset) -> torch.Tensor:
    """64 real images, uint8 [64, 3, 28, 28] with distinct channels."""
    x = fashion.x_train[:64]
    return torch.cat([x, 255 - x, x.transpose(2, 3)], dim=1)


def test_crop_flip_without_padding_or_flip_is_identity(images: torch.Tensor) -> None:
    out = random_crop_flip(images, padding=0, flip=False, generator=seeded(0))
    assert torch.equal(out, images)
    floats = images.float() / 255
    assert torch.equal(random_crop_flip(floats, padding=0, flip=False), floats)


def test_flip_only_mirrors_some_samples(images: torch.Tensor) -> None:
    out = random_crop_flip(images, padding=0, flip=True, generator=seeded(0))
    mirrored = [torch.equal(o, x.flip(-1)) for o, x in zip(out, images)]
    kept = [torch.equal(o, x) for o, x in zip(out, images)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert any(mirrored) and any(kept)


def test_crops_are_windows_of_the_padded_image(images: torch.Tensor) -> None:
    out = random_crop_flip(images, padding=4, flip=False, generator=seeded(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (4, 4, 4, 4))
    offsets = set()
    for i in range(8):
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(out[i], padded[i, :, dy : dy + 28, dx : dx + 28])
        ]
        assert matches, f"sample {i} is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_crop_flip_is_deterministic_given_a_generator(images: torch.Tensor) -> None:
    floats = images.float() / 255
    a = random_crop_flip(floats, generator=seeded(5))
    assert a.dtype == torch.float32 and a.shape == floats.shape
    assert torch.equal(a, random_crop_flip(floats, generator=seeded(5)))
    assert not torch.equal(a, random_crop_flip(floats, generator=seeded(6)))


# --- BatchLoader ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def subset(fashion: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """103 real images; their labels are their indices so batches tell what they hold."""
    return fashion.x_train[:103], torch.arange(103)


def batches(loader: BatchLoader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(loader)


def test_loader_covers_every_index_once(subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = subset
    loader = BatchLoader(x, y, 10, shuffle=True)
    assert len(loader) == 11 and loader.num_samples == 103
    out = batches(loader)
    assert [len(b) for _, b in out] == [10] * 10 + [3]
    seen = torch.cat([b for _, b in out])
    assert torch.equal(seen.sort().values, y) and not torch.equal(seen, y)
    for xb, yb in out:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (1, 28, 28)
        assert torch.equal(xb, x[yb].float() / 255)
    assert [len(b) for _, b in BatchLoader(x, y, 10, drop_last=True)] == [10] * 10


def test_loader_epochs_are_reproducible(subset: tuple[torch.Tensor, torch.Tensor]) -> None:
    loader = BatchLoader(*subset, 16, shuffle=True, augment=True, seed=3)
    loader.set_epoch(2)
    first, second = batches(loader), batches(loader)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(first, second))
    xb = torch.cat([a for a, _ in first])
    assert xb.min() >= 0 and xb.max() <= 1
    assert not torch.equal(xb, subset[0][torch.cat([b for _, b in first])].float() / 255)
    loader.set_epoch(3)
    assert not torch.equal(torch.cat([b for _, b in loader]), torch.cat([b for _, b in first]))


@pytest.mark.parametrize("n", [102, 103])
def test_loader_shards_ranks_like_distributed_sampler(
    subset: tuple[torch.Tensor, torch.Tensor], n: int
) -> None:
    x, y = subset[0][:n], subset[1][:n]
    shards = []
    for rank in range(2):
        loader = BatchLoader(x, y, 8, shuffle=True, rank=rank, world_size=2, seed=1)
        loader.set_epoch(4)
        assert loader.num_samples == (n + 1) // 2 and len(loader) == 7
        shards.append(torch.cat([b for _, b in loader]))
    assert torch.equal(torch.cat(shards).unique(), y)
    if n == 102:  # divisible: disjoint; otherwise one index is repeated to even out the ranks
        assert not set(shards[0].tolist()) & set(shards[1].tolist())


def test_loader_channels_last(fashion: Dataset) -> None:
    x = torch.cat([fashion.x_test[:8]] * 3, dim=1)
    xb, _ = next(iter(BatchLoader(x, fashion.y_test[:8], 4, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)
