"""Mini-batches from uint8 images held on the training device."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from phaseguard.data.augment import random_crop_flip
from phaseguard.errors import ConfigError


class BatchLoader:
    """Iterate over ``(x, y)`` batches: x float32 ``[B, C, H, W]`` in [0, 1], y int64 ``[B]``.

    The uint8 images ``x`` (``[N, C, H, W]``) and labels ``y`` (``[N]``) are moved to ``device``
    once. Each batch is indexed there, augmented as uint8 (``augment``: random crop with
    ``padding`` and, if ``flip``, horizontal flip) and converted with ``float() / 255``.

    Like ``DistributedSampler``, rank ``r`` of ``world_size`` takes every ``world_size``-th
    index of the epoch's order (a permutation seeded with ``seed + epoch`` if ``shuffle``, else
    ``0..N-1``), wrapped around so every rank gets ``num_samples = ceil(N / world_size)``.
    Augmentation draws from a generator on ``device`` seeded from ``(seed, epoch, rank)`` at the
    start of each iteration. An epoch's batches are therefore a pure function of
    ``(seed, epoch, rank)``: iterating twice without :meth:`set_epoch` gives identical batches.

    With ``yield_raw=True`` the batches come un-augmented and the caller applies
    :meth:`augment` itself, when it needs both views (DAT mixes amplitudes of the raw image and
    augments the result); the draws are the same generator's.

    With ``augment``, a ``padding`` outside ``0..min(H, W)`` raises :class:`ConfigError`
    naming ``data.padding`` (a larger one only pads with zeros, at a cost growing with it).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        padding: int = 4,
        flip: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        yield_raw: bool = False,
    ) -> None:
        if x.dtype != torch.uint8 or x.ndim != 4 or y.shape != (len(x),) or len(x) == 0:
            raise ValueError(
                f"expected uint8 x [N, C, H, W] and y [N], N > 0; got x {x.dtype} "
                f"{list(x.shape)}, y {list(y.shape)}"
            )
        if batch_size < 1 or seed < 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"invalid batch_size={batch_size}, seed={seed}, rank={rank}, "
                f"world_size={world_size}"
            )
        if augment and not 0 <= padding <= min(x.shape[2:]):
            raise ConfigError(
                f"data.padding={padding} must be in 0..{min(x.shape[2:])} for "
                f"{x.shape[2]}x{x.shape[3]} images"
            )
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.shuffle, self.augment_enabled = shuffle, augment
        self.padding, self.flip = padding, flip
        self.drop_last, self.seed, self.rank, self.world_size = drop_last, seed, rank, world_size
        self.channels_last, self.yield_raw = channels_last, yield_raw
        self.epoch = 0
        self.generator = torch.Generator(device=self.device)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch: ``ceil(N / world_size)``."""
        return -(-len(self.x) // self.world_size)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = epoch

    def indices(self) -> Tensor:
        """This rank's int64 sample indices for the current epoch, in iteration order (CPU)."""
        n = len(self.x)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)
        total = self.num_samples * self.world_size
        return order.repeat(-(-total // n))[:total][self.rank :: self.world_size]

    def augment(self, x: Tensor) -> Tensor:
        """The configured crop/flip of a batch [B, C, H, W] (uint8 or float; identity if
        augmentation is off), drawing from this epoch's generator."""
        if not self.augment_enabled:
            return x
        return random_crop_flip(x, self.padding, self.flip, self.generator)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        indices = self.indices().to(self.device)
        state = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1)
        self.generator.manual_seed(int(state[0]))
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = indices[start : start + self.batch_size]
            x = self.x[index]
            if not self.yield_raw:
                x = self.augment(x)
            x = x.float().div_(255)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[index]
