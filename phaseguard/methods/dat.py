"""DAT: dual adversarial training with an adversarial amplitude generator (docs/dat.md
sections 3-8).

One iteration (``generator_update: sequential``, the reference order)::

    x' = EAEG(x, main)                                 x: the augmented benign view
    A, P = decompose(x_raw); logits = f(x_raw)         eval mode, main branch, no graph
    x_hat = augment(recompose(mix(G(z, logits), A, lam), P))     lam ~ U(0, mix_max)
    x_hat' = EAEG(x_hat, aux)                          projected around x_hat: keeps a path to G
    classifier: minimise L_DAT with x_hat, x_hat' detached          (trainer's optimiser step)
    generator:  maximise L_DAT through x_hat and x_hat' with the updated classifier

    L_AT(u, u') = CE_ls(f(u), y) + beta * KL(p(u) || p(u'))
    L_DAT = (L_AT(x, x') + L_AT(x_hat, x_hat')) / 2 + omega * JS(p(x), p(x_hat))

The generator step does only the work that reaches G (docs/dat.md section 12): the x and x'
terms carry no gradient to G, so they are left out of its loss; p(x) is a constant there (one
forward without a graph); the classifier's parameters are frozen, so no weight gradient is
computed; and BN running statistics are not updated a second time unless
``reference_bn_updates`` asks for the reference's behaviour (its generator step re-runs all
four branches in train mode).

Training takes the classifier's gradient in three pieces (:meth:`DAT.loss_and_backward`): a
branch's graph is back-propagated as soon as the logits its gradient depends on are known, so at
most two of the four branch graphs are alive at once, as in TRADES and MART.

``generator_update: joint`` is the cheaper variant: one forward and one backward, the classifier
descending L_DAT while the generator ascends it through a gradient reversal at x_hat and x_hat'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from ..attacks import TradesKL, frozen_parameters
from ..generator import AmplitudeGenerator
from ..models import bn_branch
from ..spectrum import decompose, mix_amplitude, recompose
from .adversarial import kl_div
from .base import Batch, Method, MethodContext, Metrics, accuracy
from .registry import register_method


@dataclass
class DATOptions:
    """DAT's options; defaults: the reference code's CIFAR settings (docs/dat.md sections 2-8)."""

    label_smoothing: float = 0.5  # of the CE terms (0 for Tiny-ImageNet in the reference)
    beta: float = 15.0  # weight of the KL term of L_AT (and of the EAEG objective)
    omega: float = 2.0  # weight of the JS term between p(x) and p(x_hat)
    mix_max: float = 1.0  # lam ~ U(0, mix_max); the paper's appendix: 0.8 CIFAR-10, 0.6 CIFAR-100
    z_dim: int = 100  # generator noise size
    generator_lr: float = 0.1  # generator SGD: fixed learning rate
    generator_momentum: float = 0.9
    generator_weight_decay: float = 5e-4
    generator_bn_eps: float = 0.8  # the reference's BatchNorm1d(n, 0.8): eps, not momentum
    eaeg_eps: float | None = None  # EAEG ball radius (None: attack.eps)
    eaeg_step: float | None = None  # EAEG step (None: attack.step)
    eaeg_steps: int = 5  # EAEG steps K
    generator_update: Literal["sequential", "joint"] = "sequential"
    reference_bn_updates: bool = False  # generator step updates BN running stats as reference
    # the paper's ablations
    mixed_branch: bool = True  # False: "EAEG only": L_AT(x, x') alone, no x_hat branch
    js: bool = True  # False: no JS term
    mixup: bool = True  # False: x_hat = x (no amplitude mix-up, no generator)
    split_bn: bool = True  # False: x_hat and x_hat' share the main BN branch
    amplitude: Literal["generator", "random"] = "generator"  # random: U(0,1) amplitudes


class _ReverseGrad(torch.autograd.Function):
    """Identity forward, negated gradient backward (the joint update's gradient reversal)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def _value_and_grads(
    fn: Callable[..., Tensor], *logits: Tensor
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``fn(*logits)`` (detached) and its gradients with respect to each of ``logits``, computed
    on detached copies: the logits' graphs are not touched."""
    leaves = [z.detach().requires_grad_(True) for z in logits]
    with torch.enable_grad():
        value = fn(*leaves)
    return value.detach(), torch.autograd.grad(value, leaves)


def js_divergence(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Batch-mean Jensen-Shannon divergence of the softmax predictions (docs/dat.md section 5)."""
    p, q = logits_a.float().softmax(1), logits_b.float().softmax(1)
    log_m = ((p + q) / 2).clamp(1e-7, 1.0).log()
    kl_pm = (p * (p.clamp_min(1e-12).log() - log_m)).sum(1)
    kl_qm = (q * (q.clamp_min(1e-12).log() - log_m)).sum(1)
    return ((kl_pm + kl_qm) / 2).mean()


@contextlib.contextmanager
def frozen_bn_statistics(model: nn.Module) -> Iterator[None]:
    """Train-mode forwards inside leave every BN's running statistics and counter unchanged."""
    saved = []
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


@register_method
class DAT(Method):
    """Dual adversarial training with an adversarial amplitude generator (NeurIPS 2024)."""

    name = "dat"
    Options = DATOptions

    @classmethod
    def wants_split_bn(cls, options: DATOptions) -> bool:
        return options.split_bn and options.mixed_branch

    @classmethod
    def supports_fp16(cls, options: DATOptions) -> bool:
        # the joint backward would scale G's gradients with the classifier's gradient scaler
        return options.generator_update != "joint"

    def __init__(self, ctx: MethodContext, options: DATOptions) -> None:
        super().__init__(ctx, options)
        o, a = options, ctx.attack
        self.aux = "aux" if self.wants_split_bn(o) else "main"
        self.eaeg = TradesKL(
            ctx.net,
            eps=a.eps if o.eaeg_eps is None else o.eaeg_eps,
            step=a.step if o.eaeg_step is None else o.eaeg_step,
            steps=o.eaeg_steps,
            beta=o.beta,
            ce_weight=1.0,
            label_smoothing=o.label_smoothing,
            norm=a.norm,
        )
        self.uses_generator = o.mixed_branch and o.mixup and o.amplitude == "generator"
        self.generator = AmplitudeGenerator(
            ctx.num_classes, ctx.image_shape, o.z_dim, o.generator_bn_eps
        ).to(ctx.device)
        self.generator_model: nn.Module = self.generator
        if ctx.distributed:  # replicated, gradients all-reduced like the classifier's
            self.generator_model = nn.parallel.DistributedDataParallel(
                self.generator,
                device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            )
        self.generator_optimizer = torch.optim.SGD(
            self.generator.parameters(),
            lr=o.generator_lr,
            momentum=o.generator_momentum,
            weight_decay=o.generator_weight_decay,
        )

    # -- batch ------------------------------------------------------------------------------
    def _distractor_amplitude(self, x_raw: Tensor) -> Tensor:
        """A_G [B,C,H,W] in (0,1): the generator's on the raw image's logits, or uniform noise."""
        if not self.uses_generator:
            return torch.rand_like(x_raw)
        net = self.ctx.net
        was_training = net.training
        net.eval()
        with torch.no_grad():
            logits = net(x_raw).float()
        net.train(was_training)
        z = torch.randn(len(x_raw), self.options.z_dim, device=x_raw.device)
        return self.generator_model(z, logits)

    def views(self, x_raw: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """The amplitude mix-up of the raw images x_raw [B,C,H,W] in [0,1], step by step
        (docs/dat.md section 3); what :meth:`mixed_view` and the report's DAT figure show.

        Returns ``amplitude`` |F(x_raw)|, fftshift-ed, and ``phase`` angle(F(x_raw)), unshifted
        (float32 [B,C,H,W], :func:`~phaseguard.spectrum.decompose`); ``distractor`` A_G, float32
        [B,C,H,W] in (0,1): the generator's on the logits of x_raw (uniform noise with
        ``amplitude: random``); ``lam`` [B] in [0, mix_max); ``x_hat`` [B,C,H,W] in [0,1]:
        ``recompose(lam * A_G + (1 - lam) * amplitude, phase)``, augmented, graph to the
        generator kept. With labels y (int64 [B]) also ``x_hat_adv``: :meth:`attack_mixed`.
        Draws lam, then the generator's noise, from the global torch generator.
        """
        amplitude, phase = decompose(x_raw)
        lam = torch.rand(len(x_raw), device=x_raw.device) * self.options.mix_max
        distractor = self._distractor_amplitude(x_raw).float()
        mixed = mix_amplitude(amplitude, distractor, lam)
        x_hat = self.ctx.augment(recompose(mixed, phase).to(x_raw.dtype))
        out = {
            "amplitude": amplitude,
            "phase": phase,
            "distractor": distractor,
            "lam": lam,
            "x_hat": x_hat,
        }
        if y is not None:
            out["x_hat_adv"] = self.attack_mixed(x_hat, y)
        return out

    def mixed_view(self, x_raw: Tensor) -> Tensor:
        """x_hat: the raw image's phase with its amplitude mixed with a distractor, augmented
        after recombination (docs/dat.md section 3). Keeps the graph to the generator."""
        return self.views(x_raw)["x_hat"]

    def attack_mixed(self, x_hat: Tensor, y: Tensor) -> Tensor:
        """x_hat' = EAEG(x_hat) on the auxiliary BN branch: x_hat [B,C,H,W] in [0,1], y int64
        [B] -> [B,C,H,W] in [0,1] within the EAEG ball around x_hat, projected around the
        caller's x_hat so that a loss on it reaches the generator."""
        with bn_branch(self.ctx.net, self.aux):
            return self.eaeg(x_hat, y, keep_graph_to_input=self.uses_generator)

    def prepare(self, x: Tensor, y: Tensor) -> Batch:
        batch = super().prepare(x, y)
        batch["x_adv"] = self.eaeg(batch["x"], y)
        if not self.options.mixed_branch:
            return batch
        x_hat = self.mixed_view(x) if self.options.mixup else batch["x"]
        batch["x_hat"], batch["x_hat_adv"] = x_hat, self.attack_mixed(x_hat, y)
        return batch

    # -- losses -----------------------------------------------------------------------------
    def _l_at(self, logits: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        ce = F.cross_entropy(logits, y, label_smoothing=self.options.label_smoothing)
        return ce + self.options.beta * kl_div(logits, logits_adv).mean()

    def _mixed_terms(
        self, model: nn.Module, x_hat: Tensor, x_hat_adv: Tensor, y: Tensor, clean: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(L_AT(x_hat, x_hat') / 2 + omega * JS(p(x), p(x_hat)), logits of x_hat and x_hat')."""
        with bn_branch(model, self.aux):
            logits_hat, logits_hat_adv = model(x_hat).float(), model(x_hat_adv).float()
        loss = self._l_at(logits_hat, logits_hat_adv, y) / 2
        if self.options.js:
            loss = loss + self.options.omega * js_divergence(clean, logits_hat)
        return loss, logits_hat, logits_hat_adv

    def _mixed_inputs(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """x_hat and x_hat' for the classifier's loss: detached (sequential update) or through a
        gradient reversal to the generator (joint update)."""
        x_hat, x_hat_adv = batch["x_hat"], batch["x_hat_adv"]
        if self.options.generator_update == "joint" and self.uses_generator:
            return _ReverseGrad.apply(x_hat), _ReverseGrad.apply(x_hat_adv)
        return x_hat.detach(), x_hat_adv.detach()

    @staticmethod
    def _metrics(y: Tensor, *logits: Tensor) -> Metrics:
        names = ("acc", "acc_adv", "acc_hat", "acc_hat_adv")
        return {name: accuracy(z, y) for name, z in zip(names, logits, strict=False)}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Metrics]:
        y = batch["y"]
        logits, logits_adv = model(batch["x"]).float(), model(batch["x_adv"]).float()
        if not self.options.mixed_branch:
            return self._l_at(logits, logits_adv, y), self._metrics(y, logits, logits_adv)
        x_hat, x_hat_adv = self._mixed_inputs(batch)
        mixed, logits_hat, logits_hat_adv = self._mixed_terms(model, x_hat, x_hat_adv, y, logits)
        loss = self._l_at(logits, logits_adv, y) / 2 + mixed
        return loss, self._metrics(y, logits, logits_adv, logits_hat, logits_hat_adv)

    def loss_and_backward(
        self, model: nn.Module, batch: Batch, backward: Callable[[Tensor], None]
    ) -> tuple[Tensor, Metrics]:
        """:meth:`loss` with its gradient taken in three pieces, so that at most two of the four
        branch graphs are alive at once (as in TRADES and MART) instead of all four.

        The loss is a function of the four branches' logits; each branch's graph is
        back-propagated, with the gradient of L_DAT with respect to its logits, as soon as the
        logits that gradient depends on are known: x' once p(x) is (its KL term), x once
        p(x_hat) is (the JS term), then x_hat and x_hat' together. Forwards run in the order of
        :meth:`loss`, so logits, BN statistics and the loss value are the same; the weight
        gradients are the same sum, accumulated in another order (equal up to rounding).
        Under DDP the first two pieces accumulate locally (``no_sync``) and the last one
        all-reduces the sum; a zero term in it reaches the parameters its graphs do not (the main
        BN branch's), since DDP all-reduces only what the last backward reaches.
        """
        if not self.options.mixed_branch:
            return super().loss_and_backward(model, batch, backward)
        o, y = self.options, batch["y"]
        x_hat, x_hat_adv = self._mixed_inputs(batch)
        ddp = isinstance(model, DistributedDataParallel)
        with model.no_sync() if ddp else contextlib.nullcontext():
            logits, logits_adv = model(batch["x"]).float(), model(batch["x_adv"]).float()
            at_x, (grad_x, grad_adv) = _value_and_grads(
                lambda z, z_adv: self._l_at(z, z_adv, y) / 2, logits, logits_adv
            )
            backward((logits_adv * grad_adv).sum())
            with bn_branch(model, self.aux):
                logits_hat = model(x_hat).float()
            js, grad_hat = logits_hat.new_zeros(()), torch.zeros_like(logits_hat)
            if o.js:
                js, (grad_x_js, grad_hat) = _value_and_grads(
                    lambda z, z_hat: o.omega * js_divergence(z, z_hat), logits, logits_hat
                )
                grad_x = grad_x + grad_x_js
            backward((logits * grad_x).sum())
        with bn_branch(model, self.aux):
            logits_hat_adv = model(x_hat_adv).float()
        at_hat = self._l_at(logits_hat, logits_hat_adv, y) / 2
        last = at_hat + (logits_hat * grad_hat).sum()
        if ddp:  # DDP all-reduces the parameters this backward reaches: make it reach them all
            last = last + 0 * sum(p.sum() for p in model.parameters() if p.requires_grad)
        backward(last)
        loss = at_x + (at_hat.detach() + js)
        return loss, self._metrics(y, logits, logits_adv, logits_hat, logits_hat_adv)

    def generator_loss(self, batch: Batch) -> Tensor:
        """The part of L_DAT that depends on G, on the current classifier (train mode, frozen
        weights); the generator descends its negative."""
        net, y = self.ctx.net, batch["y"]
        net.train()
        stats = (
            contextlib.nullcontext()
            if self.options.reference_bn_updates
            else (frozen_bn_statistics(net))
        )
        with stats, frozen_parameters(net):
            with torch.no_grad():
                clean = net(batch["x"]).float()
                if self.options.reference_bn_updates:
                    net(batch["x_adv"])  # the reference's extra BN update of the x' branch
            mixed, _, _ = self._mixed_terms(net, batch["x_hat"], batch["x_hat_adv"], y, clean)
        return mixed

    def after_step(self, batch: Batch) -> Metrics:
        if not self.uses_generator:
            return {}
        if self.options.generator_update == "sequential":
            loss = self.generator_loss(batch)
            (-loss).backward()
            metrics = {"generator_loss": loss.detach()}
        else:
            metrics = {}
        self.generator_optimizer.step()
        self.generator_optimizer.zero_grad(set_to_none=True)
        return metrics

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
