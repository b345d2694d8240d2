"""Robust evaluation: attacks and AutoAttack on the first n test images, written as JSON.

``evaluate`` runs the named evaluation attacks (docs/dat.md section 9; the registry of
:mod:`phaseguard.attacks.evaluation`) on one model, records per attack the robust accuracy, the
count and the seconds, the per-sample worst case over every attack run, a RobustBench-style
entry, and sanity checks that flag the usual signs of a broken evaluation or of gradient
masking; the checks follow from each attack's registered properties. The model is always
evaluated in eval mode (main BN branch).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import NATURAL, PGD, EvalAttack, EvalTask, attack_mode, eval_attack
from .attacks.autoattack import AA_BLACK_BOX
from .predict import as_unit_float, predict_correct

#: The entry RobustBench's ``autoattack_acc`` reports.
AUTOATTACK = "aa"


@dataclass
class AttackResult:
    """Robust accuracy of one attack over the evaluated images."""

    accuracy: float
    correct: int
    n: int
    seconds: float


@dataclass
class SanityCheck:
    name: str
    passed: bool
    detail: str


@dataclass
class EvalReport:
    """Everything ``phaseguard eval`` writes to ``eval.json``."""

    eps: float
    norm: str
    n: int
    attacks: dict[str, AttackResult] = field(default_factory=dict)
    worst_case: AttackResult | None = None
    sanity: list[SanityCheck] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    autoattack_breakdown: dict[str, int] = field(default_factory=dict)  # images each broke first

    @property
    def clean_accuracy(self) -> float | None:
        natural = self.attacks.get(NATURAL)
        return natural.accuracy if natural else None

    def robustbench(self) -> dict[str, Any]:
        """A RobustBench-style entry (accuracies in percent, as its model cards give them)."""
        aa = self.attacks.get(AUTOATTACK)
        clean = self.clean_accuracy
        return {
            "clean_acc": None if clean is None else round(100 * clean, 2),
            "autoattack_acc": None if aa is None else round(100 * aa.accuracy, 2),
            "eps": self.eps,
            "threat_model": "Linf" if self.norm == "linf" else "L2",
            "architecture": self.info.get("architecture"),
            "dataset": self.info.get("dataset"),
            "n_eval": self.n,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["robustbench"] = self.robustbench()
        return d

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def table(self) -> str:
        """A plain-text table of the results and the sanity checks."""
        rows = [f"{'attack':<12}{'accuracy':>10}{'correct':>10}{'seconds':>10}"]
        results = dict(self.attacks)
        if self.worst_case is not None:
            results["worst case"] = self.worst_case
        for name, r in results.items():
            rows.append(f"{name:<12}{100 * r.accuracy:>9.2f}%{r.correct:>10}{r.seconds:>10.1f}")
        for check in self.sanity:
            rows.append(f"[{'ok' if check.passed else 'WARNING'}] {check.name}: {check.detail}")
        return "\n".join(rows)


def _result(correct: torch.Tensor, seconds: float) -> AttackResult:
    n = len(correct)
    hits = int(correct.sum())
    return AttackResult(hits / n if n else float("nan"), hits, n, seconds)


def _zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of images whose input gradient of the CE loss is exactly zero."""
    x = x.clone().requires_grad_(True)
    with attack_mode(model):
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return (grad.flatten(1).abs().amax(1) == 0).float().mean().item()


def _black_box_check(label: str, broken: int, white_box: str) -> SanityCheck:
    """``broken`` images a black-box attack ``label`` broke that ``white_box`` left correct."""
    return SanityCheck(
        "black-box attack finds nothing the white-box ones missed",
        broken == 0,
        f"{label} broke {broken} images that {white_box} left correct"
        + (" (gradient masking?)" if broken else ""),
    )


def _ceiling_check(
    check: str, entry: EvalAttack, ok: torch.Tensor, other: EvalAttack, other_ok: torch.Tensor
) -> SanityCheck:
    """``entry`` (correct where ``ok``, bool [N]) scores at most ``other`` (``other_ok``)."""
    hits, limit = int(ok.sum()), int(other_ok.sum())
    # randomised attacks draw different random starts: a few images near the boundary go either way
    slack = max(1, len(ok) // 200) if entry.randomized or other.randomized else 0
    return SanityCheck(
        check,
        hits <= limit + slack,
        f"{entry.label} {hits} vs {other.label} {limit} correct"
        + (f" (random starts: {slack} allowed)" if slack else ""),
    )


def sanity_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    correct: dict[str, torch.Tensor],
    entries: dict[str, EvalAttack],
    breakdown: dict[str, int] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> list[SanityCheck]:
    """The usual signs of a broken evaluation or of gradient masking, checked on one model.

    x: the evaluated images, uint8 [N, C, H, W] or float in [0, 1]; y: int64 [N].
    correct: per attack run, bool [N] (True where the model stayed correct); entries: the
    registered :class:`~phaseguard.attacks.EvalAttack` of each; breakdown: AutoAttack's
    {attack: images it broke first}, when it ran. Checks, in this order: every attack scores at
    most the clean accuracy; PGD at eps 0 changes nothing; each attack scores at most its
    :class:`~phaseguard.attacks.Ceiling` (with slack when either is randomised); black-box
    attacks break nothing the white-box ones left correct (black-box entries, and AutoAttack's
    black-box attacks); input gradients are not all zero.
    """
    device = torch.device(device)
    checks = []
    clean = correct.get(NATURAL)
    if clean is None:
        clean = predict_correct(model, x, y, batch_size=batch_size, device=device)
    for name, ok in correct.items():
        if entries[name].access == "none":
            continue
        hits, gain = int(ok.sum()), int((ok & ~clean).sum())
        checks.append(
            SanityCheck(
                f"{name} <= clean",
                hits <= int(clean.sum()),
                f"{hits} robust vs {int(clean.sum())} clean"
                + (f"; {gain} images correct only under attack" if gain else ""),
            )
        )
    at_zero = predict_correct(
        model, x, y, attack=PGD(model, eps=0.0, steps=2), batch_size=batch_size, device=device
    )
    checks.append(
        SanityCheck(
            "attack at eps=0 equals clean",
            bool((at_zero == clean).all()),
            f"{int(at_zero.sum())} vs {int(clean.sum())} correct",
        )
    )
    for name, entry in entries.items():
        ceiling = entry.ceiling
        if ceiling is not None and ceiling.attack in correct:
            other, other_ok = entries[ceiling.attack], correct[ceiling.attack]
            checks.append(_ceiling_check(ceiling.check, entry, correct[name], other, other_ok))
    white_box = [name for name, entry in entries.items() if entry.access == "white-box"]
    if white_box:
        left_correct = torch.stack([correct[name] for name in white_box]).all(0)
        labels = "/".join(entries[name].label for name in white_box)
        for name, entry in entries.items():
            if entry.access == "black-box":
                broken = int((~correct[name] & left_correct).sum())
                checks.append(_black_box_check(entry.label, broken, labels))
    if breakdown:
        for name in AA_BLACK_BOX:
            checks.append(_black_box_check(name.capitalize(), breakdown.get(name, 0), "APGD/FAB"))
    first = x[:batch_size].to(device)
    first = as_unit_float(first)
    frac = _zero_gradient_fraction(model, first, y[:batch_size].to(device))
    checks.append(
        SanityCheck(
            "input gradients are non-zero",
            frac <= 0.05,
            f"{100 * frac:.1f}% of images have an all-zero input gradient"
            + (" (gradient masking?)" if frac > 0.05 else ""),
        )
    )
    return checks


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[str],
    eps: float = 8 / 255,
    norm: str = "linf",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    aa_state: Path | None = None,
    aa_attacks: list[str] | None = None,
    info: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> EvalReport:
    """Run ``attacks`` (names from :func:`~phaseguard.attacks.list_eval_attacks`) on images x
    (uint8 [N, C, H, W], or float in [0, 1]) with labels y (int64 [N]); return the report with
    the per-sample worst case and the :func:`sanity_checks`.

    The attacks run in the given order, each after ``torch.manual_seed(seed)``. ``aa`` is
    AutoAttack's standard version, or its custom version with ``aa_attacks``; its progress is
    saved in ``aa_state`` (resumed from there when the file exists).

    Raises:
        ConfigError: an unknown attack name (before anything runs; the message lists the known
            ones).
    """
    entries = {name: eval_attack(name) for name in attacks}
    device = torch.device(device)
    model = model.to(device)
    report = EvalReport(eps=eps, norm=norm, n=len(y), info=dict(info or {}))
    task = EvalTask(
        model,
        x,
        y,
        eps,
        norm,
        batch_size,
        device,
        seed,
        aa_state,
        aa_attacks,
        report.autoattack_breakdown,
    )
    correct: dict[str, torch.Tensor] = {}
    for name, entry in entries.items():
        torch.manual_seed(seed)
        start = time.perf_counter()
        ok = entry.run(task)
        correct[name] = ok
        report.attacks[name] = _result(ok, time.perf_counter() - start)
        if log is not None:
            log(f"{name}: {100 * report.attacks[name].accuracy:.2f}%")
    if correct:
        worst = torch.stack(list(correct.values())).all(0)
        report.worst_case = _result(worst, sum(r.seconds for r in report.attacks.values()))
    report.sanity = sanity_checks(
        model, x, y, correct, entries, report.autoattack_breakdown, batch_size, device
    )
    return report
