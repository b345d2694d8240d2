"""Adversarial weight perturbation (AWP, Wu et al. 2020) as an option of any method.

Each step, a proxy copy of the classifier takes one SGD step that *increases* the method's own
loss on the batch; the layer-wise normalised difference between proxy and classifier, times
``gamma``, is added to the classifier's weights for its loss, backward and optimiser step, and
removed afterwards. Only multi-dimensional weights (convolutions, linear layers) are perturbed.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..config import AWPConfig
from ..methods import Batch, Method
from .distributed import DistInfo, all_reduce_sum


class AWP:
    """Finds and applies the weight perturbation of ``model``, the bare classifier."""

    def __init__(
        self,
        model: nn.Module,
        cfg: AWPConfig,
        dist: DistInfo,
        amp: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        self.model, self.cfg, self.dist, self.amp = model, cfg, dist, amp
        self.proxy = copy.deepcopy(model)
        self.proxy_optimizer = torch.optim.SGD(self.proxy.parameters(), lr=cfg.proxy_lr)

    def _perturbation(self, method: Method, batch: Batch) -> dict[str, torch.Tensor]:
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        detached = {k: v.detach() for k, v in batch.items()}
        with self.amp():
            loss, _ = method.loss(self.proxy, detached)
        self.proxy_optimizer.zero_grad(set_to_none=True)
        (-loss).backward()
        self.proxy_optimizer.step()
        model_params = dict(self.model.named_parameters())
        diff = {}
        for name, p_proxy in self.proxy.named_parameters():
            p = model_params[name]
            if p.dim() <= 1:
                continue
            d = p_proxy.detach() - p.detach()
            # ranks agree on one perturbation, so their weights stay identical
            d = all_reduce_sum(d, self.dist) / self.dist.world_size
            diff[name] = d * (p.detach().norm() / (d.norm() + 1e-20))
        return diff

    def _add(self, diff: dict[str, torch.Tensor], coeff: float) -> None:
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, d in diff.items():
                params[name].add_(d, alpha=coeff)

    @contextlib.contextmanager
    def perturbed(self, method: Method, batch: Batch) -> Iterator[None]:
        """Weights perturbed for the enclosed loss, backward and optimiser step."""
        diff = self._perturbation(method, batch)
        self._add(diff, self.cfg.gamma)
        try:
            yield
        finally:
            self._add(diff, -self.cfg.gamma)
