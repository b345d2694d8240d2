"""Phase reliance: does a model classify by an image's Fourier phase or by its amplitude?

Each test image i is paired with an image j(i) of another class (:func:`cross_class_partners`,
seeded) and the hybrid ``recompose(amplitude of x_j, phase of x_i)`` is built
(:func:`hybrid_images`). A model that reads shape (phase) predicts y_i on the hybrid, one that
reads texture and contrast (amplitude) predicts y_j. :func:`analyze_phase_reliance` measures both,
clean and under an attack (PGD-20 by default) at the run's radius, and returns a
:class:`PhaseReliance`, which ``phaseguard analyze`` writes to ``analysis.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .attacks import build_attack
from .errors import DataError
from .files import write_json
from .predict import as_unit_float, predict_correct, run_device
from .spectrum import decompose, recompose


def cross_class_partners(y: Tensor, seed: int) -> Tensor:
    """For each image i an image j(i) of another class: ``y[j(i)] != y[i]``.

    y: int64 labels [N]. Returns int64 indices [N] on the CPU; j(i) is uniform among the images
    whose class differs from y[i] (uniform draws over all N, the same-class ones drawn again),
    from a ``torch.Generator`` seeded with ``seed``: the same labels and seed give the same
    pairs. Raises DataError when y holds fewer than two classes.
    """
    y = y.cpu()
    classes = y.unique().numel()
    if classes < 2:
        raise DataError(
            f"phase reliance needs images of at least two classes, got {len(y)} image(s) "
            f"of {classes} class(es)"
        )
    generator = torch.Generator().manual_seed(seed)
    partner = torch.randint(len(y), y.shape, generator=generator)
    redraw = (y[partner] == y).nonzero().squeeze(1)
    while redraw.numel():
        partner[redraw] = torch.randint(len(y), redraw.shape, generator=generator)
        redraw = redraw[y[partner[redraw]] == y[redraw]]
    return partner


def hybrid_images(x: Tensor, partner: Tensor, batch_size: int | None = None) -> Tensor:
    """Hybrid i = ``recompose(amplitude of x[partner[i]], phase of x[i])``.

    x: images [N, C, H, W], float in [0, 1] (uint8 is converted with
    :func:`~phaseguard.predict.as_unit_float`); partner: int64 indices into x, [N]. Returns
    float32 [N, C, H, W] in [0, 1] (:func:`~phaseguard.spectrum.recompose` clamps) on x's device.
    ``batch_size`` bounds how many images are transformed at once (all of them when None).
    """
    if partner.shape != x.shape[:1]:
        raise DataError(f"partner indices must have shape [{len(x)}], got {tuple(partner.shape)}")
    step = batch_size or max(len(x), 1)
    hybrids = []
    for start in range(0, len(x), step):
        own = as_unit_float(x[start : start + step])
        other = as_unit_float(x[partner[start : start + step]])
        hybrids.append(recompose(decompose(other)[0], decompose(own)[1]))
    return torch.cat(hybrids) if hybrids else as_unit_float(x)


@dataclass
class PhaseReliance:
    """Accuracies on the originals and on cross-class amplitude/phase hybrids (all in [0, 1]).

    ``clean`` / ``robust``: the originals, clean and under ``attack`` at ``eps``.
    ``foreign_amplitude``: hybrids counted correct when the prediction is the label of the image
    that gave the phase (the image kept its phase and took another class's amplitude).
    ``foreign_phase``: hybrids counted correct when the prediction is the label of the image that
    gave the amplitude (it kept its amplitude and took another class's phase).
    ``*_robust``: the same, with the attack run on the hybrid against that label.
    ``seconds``: wall time of the whole analysis; ``info``: where the model came from.
    """

    n: int
    eps: float
    norm: str
    seed: int
    attack: str
    clean: float
    robust: float
    foreign_amplitude: float
    foreign_phase: float
    foreign_amplitude_robust: float
    foreign_phase_robust: float
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def phase_reliance(self) -> float | None:
        """``foreign_amplitude / clean``: the share of clean accuracy the phase alone keeps.

        Near 1 the model classifies by phase (another class's amplitude barely matters); near 0
        it needs the image's own amplitude. None when clean accuracy is 0.
        """
        return self.foreign_amplitude / self.clean if self.clean else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "phase_reliance": self.phase_reliance}

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    def table(self) -> str:
        """A plain-text table: one row per kind of image, clean and attacked accuracy."""
        rows = [
            f"phase reliance on {self.n} images, {self.attack} at {self.norm} eps={self.eps:g}, "
            f"seed {self.seed}",
            f"{'images (label scored)':<44}{'clean':>9}{self.attack:>9}",
        ]
        for name, clean, robust in (
            ("originals (own label)", self.clean, self.robust),
            (
                "foreign amplitude (label of the phase)",
                self.foreign_amplitude,
                self.foreign_amplitude_robust,
            ),
            (
                "foreign phase (label of the amplitude)",
                self.foreign_phase,
                self.foreign_phase_robust,
            ),
        ):
            rows.append(f"{name:<44}{100 * clean:>8.2f}%{100 * robust:>8.2f}%")
        reliance = self.phase_reliance
        rows.append(
            "phase reliance (foreign amplitude / clean): "
            + ("n/a" if reliance is None else f"{reliance:.3f}")
        )
        return "\n".join(rows)


def analyze_phase_reliance(
    model: nn.Module,
    x_uint8: Tensor,
    y: Tensor,
    eps: float,
    norm: str = "linf",
    seed: int = 0,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    attack: str = "pgd20",
    info: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> PhaseReliance:
    """Measure how much ``model`` relies on Fourier phase versus amplitude.

    x_uint8: test images uint8 [N, C, H, W] (float in [0, 1] works too); y: int64 labels [N]
    with at least two classes. Each image is paired with an image of another class
    (:func:`cross_class_partners` with ``seed``) and its hybrid built (:func:`hybrid_images`);
    originals and hybrids are classified clean and under ``attack`` (a name for
    :func:`~phaseguard.attacks.build_attack`) at ``eps``/``norm``. The global torch RNG is seeded
    with ``seed`` before each of the six passes, so the attack's random starts repeat. The model is
    evaluated in eval mode and its mode restored, on its own device (the images go there, the
    model is never moved; ``device``, when given, must be that one).

    ``log`` receives one line per finished pass (``foreign amplitude, pgd20: 6.50% (13/200),
    3.1 s``); ``progress`` shows a bar per pass on stderr while it is a terminal.
    """
    if len(x_uint8) != len(y):
        raise DataError(f"{len(x_uint8)} images but {len(y)} labels")
    start = time.perf_counter()
    device = run_device(model, device)
    adversary = build_attack(attack, model, eps=eps, norm=norm)
    partner = cross_class_partners(y, seed)
    hybrids = hybrid_images(x_uint8, partner, batch_size)

    def accuracy(name: str, images: Tensor, labels: Tensor, attacked: bool) -> float:
        label = f"{name}, {attack if attacked else 'clean'}"
        torch.manual_seed(seed)
        began = time.perf_counter()
        correct = predict_correct(
            model,
            images,
            labels,
            attack=adversary if attacked else None,
            batch_size=batch_size,
            device=device,
            progress=label if progress else None,
        )
        hits = int(correct.sum())
        if log is not None:
            log(
                f"{label}: {100 * hits / len(correct):.2f}% ({hits}/{len(correct)}), "
                f"{time.perf_counter() - began:.1f} s"
            )
        return hits / len(correct)

    y_partner = y[partner]
    return PhaseReliance(
        n=len(y),
        eps=eps,
        norm=norm,
        seed=seed,
        attack=attack,
        clean=accuracy("originals", x_uint8, y, False),
        robust=accuracy("originals", x_uint8, y, True),
        foreign_amplitude=accuracy("foreign amplitude", hybrids, y, False),
        foreign_phase=accuracy("foreign phase", hybrids, y_partner, False),
        foreign_amplitude_robust=accuracy("foreign amplitude", hybrids, y, True),
        foreign_phase_robust=accuracy("foreign phase", hybrids, y_partner, True),
        seconds=time.perf_counter() - start,
        info=dict(info or {}),
    )
