"""Weight averaging (EMA or SWA) of the classifier, for validation, checkpoints and evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import AveragingConfig


class WeightAverager:
    """Keeps the averaged copy. EMA: every optimiser step, BN buffers averaged too. SWA: the
    weights at the end of each epoch from ``swa_start`` on, BN statistics recomputed on the
    training images before the averaged model is used."""

    def __init__(self, model: nn.Module, cfg: AveragingConfig) -> None:
        self.cfg = cfg
        if cfg.name == "ema":
            self.averaged = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True
            )
        else:
            self.averaged = AveragedModel(model)
        self.source = model  # the classifier being averaged

    def after_step(self) -> None:
        if self.cfg.name == "ema":
            self.averaged.update_parameters(self.source)

    def after_epoch(self, epoch: int, batches: Iterable[torch.Tensor]) -> None:
        """``epoch``: the 0-based epoch just finished; ``batches``: training images for SWA's BN."""
        if self.cfg.name == "swa" and epoch >= self.cfg.swa_start:
            self.averaged.update_parameters(self.source)
            torch.optim.swa_utils.update_bn(batches, self.averaged)

    @property
    def ready(self) -> bool:
        """Whether anything has been averaged yet (SWA waits for ``swa_start``)."""
        return int(self.averaged.n_averaged) > 0

    @property
    def model(self) -> nn.Module:
        """The averaged classifier (meaningful once :attr:`ready`)."""
        return self.averaged.module

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
