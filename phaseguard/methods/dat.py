"""DAT: dual adversarial training with an adversarial amplitude generator (docs/dat.md
sections 3-8).

One iteration (``generator_update: sequential``, the reference order)::

    x' = EAEG(x, main)                                 x: the augmented benign view
    A, P = decompose(x_raw); logits = f(x_raw)         eval mode, main branch, no graph
    x_hat = augment(recompose(mix(G(z, logits), A, lam), P))     lam ~ U(0, mix_max)
                                                       crop padding: mixed_padding if set
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

L_DAT is written once (:meth:`DAT.objective`, terms over the four branches); training takes
the classifier's gradient in three pieces (:meth:`DAT.loss_and_backward`): a branch's graph is
back-propagated as soon as the logits its gradient depends on are known, so at most two of the
four branch graphs are alive at once, as in TRADES and MART. AWP's proxy evaluates the same
terms in one graph (:meth:`DAT.loss`), the generator those that depend on it.

The generator is a :class:`~phaseguard.methods.base.Trainable`: the trainer builds its optimiser
(SGD at a fixed learning rate), replicates it under DDP, scales and steps it, and checkpoints it.

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

from ..attacks import TradesKL, frozen_parameters
from ..config import _check_float
from ..data.augment import with_padding
from ..errors import ConfigError
from ..generator import AmplitudeGenerator
from ..models import bn_branch
from ..spectrum import decompose, mix_amplitude, recompose
from .adversarial import kl_div
from .base import Backward, Batch, Method, MethodContext, Metrics, Trainable, accuracy
from .objective import Branch, Term, objective_loss, staged_backward
from .registry import register_method


@dataclass
class DATOptions:
    """DAT's options; defaults: the reference code's CIFAR settings (docs/dat.md sections 2-8)."""

    label_smoothing: float = 0.5  # of L_DAT's CE terms (0 for Tiny-ImageNet in the reference)
    beta: float = 15.0  # weight of the KL term of L_AT (and of the EAEG objective)
    omega: float = 2.0  # weight of the JS term between p(x) and p(x_hat)
    mix_max: float = 1.0  # lam ~ U(0, mix_max); the paper's appendix: 0.8 CIFAR-10, 0.6 CIFAR-100
    z_dim: int = 100  # generator noise size
    generator_lr: float = 0.1  # generator SGD: fixed learning rate
    generator_momentum: float = 0.9
    generator_weight_decay: float = 5e-4
    generator_bn_eps: float = 0.8  # the reference's BatchNorm1d(n, 0.8): eps, not momentum
    # beyond the paper (default off): "log_scale": the generator outputs an offset in (-s, s)
    # of the image's log-amplitude, A_G = |F(x)| * exp(s * tanh(g)), s = generator_log_scale,
    # instead of a sigmoid map in (0, 1) mixed with raw magnitudes (docs/dat.md section 13)
    generator_output: Literal["sigmoid", "log_scale"] = "sigmoid"
    generator_log_scale: float = 1.0
    # the generator's optimiser: "adamw" has betas (generator_momentum, 0.999) and decoupled
    # weight decay (generator_weight_decay)
    generator_optimizer: Literal["sgd", "adamw"] = "sgd"
    eaeg_eps: float | None = None  # EAEG ball radius (None: attack.eps)
    eaeg_step: float | None = None  # EAEG step (None: attack.step)
    eaeg_steps: int = 5  # EAEG steps K
    # label smoothing of the EAEG's CE (None: label_smoothing); the reference's Tiny-ImageNet
    # script trains with 0.5 and attacks with 0
    eaeg_label_smoothing: float | None = None
    # zero padding of x_hat's random crop (None: the training augmentation's, data.padding);
    # the reference crops x_hat with padding 3 on CIFAR while x uses 4
    mixed_padding: int | None = None
    generator_update: Literal["sequential", "joint"] = "sequential"
    reference_bn_updates: bool = False  # generator step updates BN running stats as reference
    # the paper's ablations
    mixed_branch: bool = True  # False: "EAEG only": L_AT(x, x') alone, no x_hat branch
    js: bool = True  # False: no JS term
    mixup: bool = True  # False: x_hat = x (no amplitude mix-up, no generator)
    split_bn: bool = True  # False: x_hat and x_hat' share the main BN branch
    amplitude: Literal["generator", "random"] = "generator"  # random: U(0,1) amplitudes

    def __post_init__(self) -> None:
        # the choices and types are checked when the options are built (method_options)
        _check_float("method.generator_log_scale", self.generator_log_scale, 0, open_low=True)


@dataclass
class L_DAT:  # noqa: N801  (the paper's name)
    """L_DAT on one batch: the classifier's forwards in order and the loss's terms."""

    branches: list[Branch]
    terms: list[Term]


class _ReverseGrad(torch.autograd.Function):
    """Identity forward, negated gradient backward (the joint update's gradient reversal)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def js_divergence(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Batch-mean Jensen-Shannon divergence of the softmax predictions (docs/dat.md section 5)."""
    p, q = logits_a.float().softmax(1), logits_b.float().softmax(1)
    log_m = ((p + q) / 2).clamp(1e-7, 1.0).log()
    kl_pm = (p * (p.clamp_min(1e-12).log() - log_m)).sum(1)
    kl_qm = (q * (q.clamp_min(1e-12).log() - log_m)).sum(1)
    return ((kl_pm + kl_qm) / 2).mean()


#: What :func:`distractor_statistics` reports per batch (training logs them per epoch).
AG_STATISTICS = ("ag_mean", "ag_std", "ag_effect")
#: Images of the probe on which :meth:`DAT.epoch_metrics` measures the generator's travel.
PROBE_SIZE = 64


def _identity(t: Tensor) -> Tensor:
    return t


@torch.no_grad()
def distractor_statistics(
    x_raw: Tensor,
    mixed: Tensor,
    amplitude: Tensor,
    phase: Tensor,
    output: Tensor,
    lam: Tensor,
    distractor_of: Callable[[Tensor], Tensor] = _identity,
) -> dict[str, Tensor]:
    """Whether the generator's output matters, per batch (0-dim float32 tensors, no host sync).

    ``ag_mean`` and ``ag_std``: of the output's values over the batch (the amplitude map A_G in
    (0, 1), or the log-amplitude offset with ``generator_output: log_scale``). ``ag_effect``:
    how much of x_hat's change from x comes from the output's variation: mean
    |x_hat - x_hat_const| / mean |x_hat - x|, where x_hat_const is made from the output's batch
    mean (one map for all images) instead of the output, both before augmentation. 0: a
    constant map would give the same x_hat; near 1: the output's variation is the whole change.
    Deterministic: draws nothing from any random generator.

    x_raw, mixed (x_hat before augmentation): [B,C,H,W] in [0,1]; amplitude, phase, output:
    float32 [B,C,H,W] (:func:`~phaseguard.spectrum.decompose`); lam: [B]; ``distractor_of``
    turns an output into the amplitude that is mixed (the identity for A_G).
    """
    constant = output.mean(0, keepdim=True).expand_as(output)
    mixed_const = recompose(mix_amplitude(amplitude, distractor_of(constant), lam), phase)
    change = (mixed - x_raw.float()).abs().mean()
    effect = (mixed - mixed_const).abs().mean() / change.clamp_min(1e-12)
    return {"ag_mean": output.mean(), "ag_std": output.std(), "ag_effect": effect}


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

    def __init__(self, ctx: MethodContext, options: DATOptions) -> None:
        super().__init__(ctx, options)
        o, a = options, ctx.attack_config
        if o.eaeg_label_smoothing is not None and not 0 <= o.eaeg_label_smoothing <= 1:
            raise ConfigError(
                f"method.eaeg_label_smoothing={o.eaeg_label_smoothing!r} must lie in [0, 1] "
                "(or be null: the training loss's label_smoothing)"
            )
        self.aux = "aux" if self.wants_split_bn(o) else "main"
        self.eaeg = TradesKL(
            ctx.model,
            eps=a.eps if o.eaeg_eps is None else o.eaeg_eps,
            step=a.step if o.eaeg_step is None else o.eaeg_step,
            steps=o.eaeg_steps,
            beta=o.beta,
            ce_weight=1.0,
            label_smoothing=(
                o.label_smoothing if o.eaeg_label_smoothing is None else o.eaeg_label_smoothing
            ),
            norm=a.norm,
        )
        self._mixed_augmentation()  # an unusable mixed_padding fails here, not mid-training
        self.uses_generator = o.mixed_branch and o.mixup and o.amplitude == "generator"
        self.log_scale = o.generator_log_scale if o.generator_output == "log_scale" else None
        # built even where unused, so that the random stream does not depend on the options
        generator = AmplitudeGenerator(
            ctx.num_classes, ctx.image_shape, o.z_dim, o.generator_bn_eps, self.log_scale
        )
        self.generator = Trainable(
            generator.to(ctx.device),
            lr=o.generator_lr,
            momentum=o.generator_momentum,
            weight_decay=o.generator_weight_decay,
            optimizer=o.generator_optimizer,
            maximise=True,
            joint=o.generator_update == "joint",
        )
        # the generator's inputs and output on the first images of the epoch (epoch_metrics)
        self._probe_inputs: tuple[Tensor, Tensor] | None = None
        self._probe_start: Tensor | None = None

    def trainables(self) -> dict[str, Trainable]:
        return {"generator": self.generator} if self.uses_generator else {}

    def _mixed_augmentation(self) -> Callable[[Tensor], Tensor]:
        """x_hat's crop/flip: ``ctx.augment``, with its padding replaced by ``mixed_padding``
        when that is set (:func:`~phaseguard.data.augment.with_padding`: the draws continue
        the same generator's stream). Without an augmentation (the context's default identity)
        there is no crop to pad: x_hat is not augmented either.

        Raises:
            ConfigError: ``mixed_padding`` is outside ``0..min(H, W)``, or set while
                ``ctx.augment`` is an augmentation whose padding cannot be replaced (not a
                method of an object with a ``padding`` attribute, such as
                :meth:`~phaseguard.data.BatchLoader.augment`)."""
        padding, augment = self.options.mixed_padding, self.ctx.augment
        if padding is None:
            return augment
        largest = min(self.ctx.image_shape[1:])
        if isinstance(padding, bool) or not isinstance(padding, int) or not 0 <= padding <= largest:
            raise ConfigError(
                f"method.mixed_padding={padding!r} must be an integer in 0..{largest} "
                "(or null: the training augmentation's padding)"
            )
        if augment is MethodContext.augment:
            return augment
        try:
            return with_padding(augment, padding)
        except TypeError as e:
            raise ConfigError(f"method.mixed_padding={padding!r}: {e}") from None

    # -- batch ------------------------------------------------------------------------------
    def _generator_output(self, x_raw: Tensor) -> Tensor:
        """[B,C,H,W]: the generator's output on the raw image's logits (A_G in (0,1), or the
        log-amplitude offset in (-s, s)), or uniform noise over the same range."""
        if not self.uses_generator:
            noise = torch.rand_like(x_raw)
            return noise if self.log_scale is None else self.log_scale * (2 * noise - 1)
        model = self.ctx.model
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = model(x_raw).float()
        model.train(was_training)
        z = torch.randn(len(x_raw), self.options.z_dim, device=x_raw.device)
        if self._probe_start is None and model.training:  # the first training batch of an epoch
            self._probe_inputs = (z[:PROBE_SIZE].clone(), logits[:PROBE_SIZE].clone())
            self._probe_start = self._probe()
        return self.generator.model(z, logits)

    def _distractor(self, output: Tensor, amplitude: Tensor) -> Tensor:
        """The amplitude mixed into x_hat: A_G itself, or |F(x)| * exp(offset) (log_scale)."""
        return output if self.log_scale is None else amplitude * output.exp()

    @torch.no_grad()
    def _probe(self) -> Tensor:
        """The generator's output (float32) on the probe inputs, its BN statistics untouched."""
        z, logits = self._probe_inputs
        module = self.generator.module
        with torch.autocast(z.device.type, enabled=False), frozen_bn_statistics(module):
            return module(z, logits).float()

    def epoch_metrics(self) -> dict[str, float]:
        """``ag_travel``: how far the generator's output moved over the epoch, the mean
        absolute change of its output on the epoch's first (up to 64) noise vectors and logits,
        in the output's units (A_G, or the log-amplitude offset). Empty without a generator."""
        if self._probe_start is None:
            return {}
        travel = (self._probe() - self._probe_start).abs().mean().item()
        self._probe_start = None
        return {"ag_travel": travel}

    def views(self, x_raw: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """The amplitude mix-up of the raw images x_raw [B,C,H,W] in [0,1], step by step
        (docs/dat.md section 3); what training and the report's DAT figure use.

        Returns ``amplitude`` |F(x_raw)|, fftshift-ed, and ``phase`` angle(F(x_raw)), unshifted
        (float32 [B,C,H,W], :func:`~phaseguard.spectrum.decompose`); ``output``, float32
        [B,C,H,W]: the generator's on the logits of x_raw, A_G in (0,1) or, with
        ``generator_output: log_scale``, the log-amplitude offset in (-s, s) (uniform noise
        over that range with ``amplitude: random``); ``distractor``: the amplitude mixed in, A_G
        or ``amplitude * exp(offset)``; ``lam`` [B] in [0, mix_max); ``x_hat`` [B,C,H,W] in
        [0,1]: ``recompose(lam * distractor + (1 - lam) * amplitude, phase)``, augmented (the
        training crop/flip, its padding ``mixed_padding`` when set), graph to the generator
        kept; the 0-dim statistics of :func:`distractor_statistics` (``ag_mean``, ``ag_std``,
        ``ag_effect``). With labels y (int64 [B]) also ``x_hat_adv``: :meth:`attack_mixed`.
        Draws lam, then the generator's noise, from the global torch generator.
        """
        amplitude, phase = decompose(x_raw)
        lam = torch.rand(len(x_raw), device=x_raw.device) * self.options.mix_max
        output = self._generator_output(x_raw).float()
        distractor = self._distractor(output, amplitude)
        mixed = recompose(mix_amplitude(amplitude, distractor, lam), phase)
        distractor_of = lambda o: self._distractor(o, amplitude)  # noqa: E731
        out = {
            "amplitude": amplitude,
            "phase": phase,
            "output": output,
            "distractor": distractor,
            "lam": lam,
            "x_hat": self._mixed_augmentation()(mixed.to(x_raw.dtype)),
            **distractor_statistics(x_raw, mixed, amplitude, phase, output, lam, distractor_of),
        }
        if y is not None:
            out["x_hat_adv"] = self.attack_mixed(out["x_hat"], y)
        return out

    def attack_mixed(self, x_hat: Tensor, y: Tensor) -> Tensor:
        """x_hat' = EAEG(x_hat) on the auxiliary BN branch: x_hat [B,C,H,W] in [0,1], y int64
        [B] -> [B,C,H,W] in [0,1] within the EAEG ball around x_hat, projected around the
        caller's x_hat so that a loss on it reaches the generator."""
        with bn_branch(self.ctx.model, self.aux):
            return self.eaeg(x_hat, y, keep_graph_to_input=self.uses_generator)

    def prepare(self, x: Tensor, y: Tensor) -> Batch:
        batch = super().prepare(x, y)
        batch["x_adv"] = self.eaeg(batch["x"], y)
        if not self.options.mixed_branch:
            return batch
        if self.options.mixup:
            views = self.views(x)
            batch.update({k: views[k] for k in ("x_hat", *AG_STATISTICS)})
        else:
            batch["x_hat"] = batch["x"]
        batch["x_hat_adv"] = self.attack_mixed(batch["x_hat"], y)
        return batch

    # -- losses -----------------------------------------------------------------------------
    def _l_at(self, logits: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
        ce = F.cross_entropy(logits, y, label_smoothing=self.options.label_smoothing)
        return ce + self.options.beta * kl_div(logits, logits_adv).mean()

    def objective(
        self, batch: Batch, x_hat: Tensor | None = None, x_hat_adv: Tensor | None = None
    ) -> L_DAT:
        """L_DAT (docs/dat.md section 5) on ``batch``'s x and x' and the given x_hat and x_hat':
        its branches in forward order and its terms. The one definition of the loss, which
        training (in pieces), AWP's proxy and the generator's objective all evaluate."""
        o, y = self.options, batch["y"]
        branches = [Branch("x", batch["x"]), Branch("x_adv", batch["x_adv"])]
        if not o.mixed_branch:  # "EAEG only": L_AT(x, x') alone
            return L_DAT(branches, [Term(("x", "x_adv"), lambda z, z_adv: self._l_at(z, z_adv, y))])
        branches += [Branch("x_hat", x_hat, self.aux), Branch("x_hat_adv", x_hat_adv, self.aux)]
        terms = [  # evaluated, and summed, in this order (see phaseguard/methods/objective.py)
            Term(("x_hat", "x_hat_adv"), lambda z, z_adv: self._l_at(z, z_adv, y) / 2),
            Term(("x", "x_hat"), lambda z, z_hat: o.omega * js_divergence(z, z_hat)),
            Term(("x", "x_adv"), lambda z, z_adv: self._l_at(z, z_adv, y) / 2),
        ]
        return L_DAT(branches, terms if o.js else [terms[0], terms[2]])

    def _mixed_inputs(self, batch: Batch) -> tuple[Tensor | None, Tensor | None]:
        """x_hat and x_hat' for the classifier's loss: detached (sequential update) or through a
        gradient reversal to the generator (joint update); None without the mixed branch."""
        if not self.options.mixed_branch:
            return None, None
        x_hat, x_hat_adv = batch["x_hat"], batch["x_hat_adv"]
        if self.options.generator_update == "joint" and self.uses_generator:
            return _ReverseGrad.apply(x_hat), _ReverseGrad.apply(x_hat_adv)
        return x_hat.detach(), x_hat_adv.detach()

    @staticmethod
    def _metrics(batch: Batch, logits: dict[str, Tensor]) -> Metrics:
        """Accuracy on each branch, and the batch's distractor statistics."""
        names = {"x": "acc", "x_adv": "acc_adv", "x_hat": "acc_hat", "x_hat_adv": "acc_hat_adv"}
        metrics = {names[b]: accuracy(z, batch["y"]) for b, z in logits.items()}
        return metrics | {k: batch[k] for k in AG_STATISTICS if k in batch}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Metrics]:
        spec = self.objective(batch, *self._mixed_inputs(batch))
        loss, logits = objective_loss(model, spec.branches, spec.terms)
        return loss, self._metrics(batch, logits)

    def loss_and_backward(
        self, model: nn.Module, batch: Batch, backward: Backward
    ) -> tuple[Tensor, Metrics]:
        """:meth:`loss` with its gradient taken in pieces (:func:`staged_backward`): x' once
        p(x) is known (its KL term), x once p(x_hat) is (the JS term), then x_hat and x_hat'
        together, so that at most two of the four branch graphs are alive at once (as in TRADES
        and MART) instead of all four."""
        spec = self.objective(batch, *self._mixed_inputs(batch))
        loss, logits = staged_backward(model, spec.branches, spec.terms, backward)
        return loss, self._metrics(batch, logits)

    def trainable_loss(self, name: str, batch: Batch) -> Tensor:
        """The generator's objective, which it ascends: the terms of L_DAT that depend on it
        (through x_hat and x_hat'), on the updated classifier in train mode with frozen weights,
        p(x) a constant. BN running statistics are left alone unless ``reference_bn_updates``
        (the reference re-runs the branches in train mode, x' included)."""
        model, o = self.ctx.model, self.options
        model.train()
        spec = self.objective(batch, batch["x_hat"], batch["x_hat_adv"])
        branches = [b for b in spec.branches if b.name != "x_adv" or o.reference_bn_updates]
        terms = [t for t in spec.terms if {"x_hat", "x_hat_adv"} & set(t.branches)]
        stats = contextlib.nullcontext() if o.reference_bn_updates else frozen_bn_statistics(model)
        with stats, frozen_parameters(model):
            loss, _ = objective_loss(model, branches, terms, constant=frozenset({"x", "x_adv"}))
        return loss
