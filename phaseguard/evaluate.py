"""Robust evaluation: attacks and AutoAttack on the first n test images, written as JSON.

``evaluate`` runs the named attacks (SPEC section 9) on one model, records per attack the robust
accuracy, the count and the seconds, the per-sample worst case over every attack run, a
RobustBench-style entry, and sanity checks that flag the usual signs of a broken evaluation or of
gradient masking. The model is always evaluated in eval mode (main BN branch).
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

from .attacks import PGD, attack_mode, build_attack, list_attacks, run_autoattack
from .errors import ConfigError

AUTOATTACK = "aa"


def as_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images become float32 in [0, 1]; float images are returned as float32."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def predict_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Which images the model classifies correctly, after ``attack`` if one is given.

    x: uint8 [N,C,H,W] (or float in [0,1]); y: int64 [N]. Returns bool [N] on the CPU. The
    model is put in eval mode for the forward and its mode restored.
    """
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(y), batch_size):
            xb = x[start : start + batch_size].to(device)
            xb = as_unit_float(xb)
            yb = y[start : start + batch_size].to(device)
            if attack is not None:
                xb = attack(xb, yb)
            with torch.no_grad():
                out.append((model(xb).argmax(1) == yb).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


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
        natural = self.attacks.get("natural")
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


def _sanity_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    report: EvalReport,
    correct: dict[str, torch.Tensor],
    batch_size: int,
    device: torch.device,
) -> list[SanityCheck]:
    checks = []
    clean = correct.get("natural")
    if clean is None:
        clean = predict_correct(model, x, y, batch_size=batch_size, device=device)
    for name, ok in correct.items():
        if name == "natural":
            continue
        gain = int((ok & ~clean).sum())
        checks.append(
            SanityCheck(
                f"{name} <= clean",
                report.attacks[name].correct <= int(clean.sum()),
                f"{report.attacks[name].correct} robust vs {int(clean.sum())} clean"
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
    if "pgd20" in correct and "pgd100" in correct:
        a20, a100 = report.attacks["pgd20"].correct, report.attacks["pgd100"].correct
        # the two draw different random starts: a few images near the boundary go either way
        slack = max(1, len(y) // 200)
        checks.append(
            SanityCheck(
                "more PGD steps do not help the model",
                a100 <= a20 + slack,
                f"PGD-100 {a100} vs PGD-20 {a20} correct (random starts: {slack} allowed)",
            )
        )
    if report.autoattack_breakdown:
        black_box = report.autoattack_breakdown.get("square", 0)
        checks.append(
            SanityCheck(
                "black-box attack finds nothing the white-box ones missed",
                black_box == 0,
                f"Square broke {black_box} images that APGD/FAB left correct"
                + (" (gradient masking?)" if black_box else ""),
            )
        )
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
    """Run ``attacks`` (names from :func:`available_attacks`) on images x (uint8 or [0,1] float,
    [N,C,H,W]) with labels y; return the report with per-sample worst case and sanity checks.

    ``aa`` is AutoAttack's standard version, or its custom version with ``aa_attacks``; its
    progress is saved in ``aa_state`` (resumed from there when the file exists)."""
    unknown = [a for a in attacks if a not in available_attacks()]
    if unknown:
        raise ConfigError(
            f"unknown attack '{unknown[0]}' (known: {', '.join(available_attacks())})"
        )
    device = torch.device(device)
    model = model.to(device)
    report = EvalReport(eps=eps, norm=norm, n=len(y), info=dict(info or {}))
    correct: dict[str, torch.Tensor] = {}
    for name in attacks:
        torch.manual_seed(seed)
        start = time.perf_counter()
        if name == "natural":
            ok = predict_correct(model, x, y, batch_size=batch_size, device=device)
        elif name == AUTOATTACK:
            xf = as_unit_float(x)
            ok = run_autoattack(
                model,
                xf,
                y,
                eps=eps,
                norm=norm,
                batch_size=batch_size,
                device=device,
                state_path=aa_state,
                seed=seed,
                breakdown=report.autoattack_breakdown,
                version="custom" if aa_attacks else "standard",
                attacks=aa_attacks,
            )
        else:
            attack = build_attack(name, model, eps=eps, norm=norm)
            ok = predict_correct(model, x, y, attack=attack, batch_size=batch_size, device=device)
        correct[name] = ok.cpu()
        report.attacks[name] = _result(ok, time.perf_counter() - start)
        if log is not None:
            log(f"{name}: {100 * report.attacks[name].accuracy:.2f}%")
    if correct:
        worst = torch.stack(list(correct.values())).all(0)
        report.worst_case = _result(worst, sum(r.seconds for r in report.attacks.values()))
    report.sanity = _sanity_checks(model, x, y, report, correct, batch_size, device)
    return report


def available_attacks() -> list[str]:
    """Attack names ``evaluate`` understands: natural, the registry's, and ``aa``."""
    return ["natural", *list_attacks(), AUTOATTACK]
