"""Robust evaluation: attacks and AutoAttack on the first n test images, written as JSON.

``evaluate`` runs the named evaluation attacks (docs/dat.md section 9; the registry of
:mod:`phaseguard.attacks.evaluation`) on one model, records per attack the robust accuracy, the
count and the seconds, the per-sample worst case over every attack run, a RobustBench
model-info entry, the environment (versions, device, date), and sanity checks that flag the
usual signs of a broken evaluation or of gradient masking; the checks follow from each attack's
registered properties. The model is always evaluated in eval mode (main BN branch), on its own
device: the images go there, the model is never moved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import NATURAL, PGD, EvalAttack, EvalTask, attack_mode, eval_attack
from .attacks.autoattack import AA_BLACK_BOX
from .files import write_json
from .hardware import device_name
from .predict import as_unit_float, predict_correct, run_device

#: The entry RobustBench's ``autoattack_acc`` reports.
AUTOATTACK = "aa"

#: RobustBench's spelling of the architectures of phaseguard's model registry (others: the name).
ROBUSTBENCH_ARCHITECTURES = {
    "resnet18": "ResNet-18",
    "preact_resnet18": "PreActResNet-18",
    "wrn28_10": "WideResNet-28-10",
    "wrn34_10": "WideResNet-34-10",
}


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
    """Everything ``phaseguard eval`` writes to ``eval.json``.

    ``info``: where the model came from (the caller's fields: ``phaseguard eval`` gives source,
    epoch, architecture, dataset, method) and ``environment`` ({phaseguard, torch, device, date}:
    versions, device name, ISO 8601 date and time of the evaluation). ``to_dict`` adds the
    :meth:`robustbench` entry.
    """

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
        """This evaluation as a RobustBench model-info entry.

        The fields, order and formats of RobustBench's ``model_info/<dataset>/<Linf|L2>/*.json``:
        ``eps`` a string (:func:`robustbench_eps`: "8/255", "0.1"), ``clean_acc`` and
        ``autoattack_acc`` percentages as strings with two decimals ("" when natural or aa was
        not run). Filled from what phaseguard knows: ``dataset`` and ``architecture`` (from
        ``info``), ``additional_data`` false, ``number_forward_passes`` 1, ``unreliable`` false;
        what only the authors know (``link``, ``name``, ``authors``, ``venue``, ``reported``,
        ``footnote``) is "". RobustBench evaluates on the full test set: this entry covers the
        report's ``n`` images.
        """
        aa = self.attacks.get(AUTOATTACK)
        architecture = self.info.get("architecture", "")
        return {
            "link": "",
            "name": "",
            "authors": "",
            "additional_data": False,
            "number_forward_passes": 1,
            "dataset": self.info.get("dataset", ""),
            "venue": "",
            "architecture": ROBUSTBENCH_ARCHITECTURES.get(architecture, architecture),
            "eps": robustbench_eps(self.eps),
            "clean_acc": _percent(self.clean_accuracy),
            "reported": "",
            "autoattack_acc": _percent(aa.accuracy if aa else None),
            "footnote": "",
            "unreliable": False,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["robustbench"] = self.robustbench()
        return d

    def write(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

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


def robustbench_eps(eps: float) -> str:
    """eps as RobustBench writes it: "8/255" where eps is k/255 (to 1e-6) with more than three
    decimals, else the number ("0.1", "0.5", "0.031")."""
    k = round(eps * 255)
    if round(eps, 3) != eps and abs(eps * 255 - k) < 1e-6:
        return f"{k}/255"
    return f"{eps:g}"


def _percent(accuracy: float | None) -> str:
    return "" if accuracy is None else f"{100 * accuracy:.2f}"


def environment(device: torch.device) -> dict[str, str]:
    """What an evaluation ran with: phaseguard and torch versions, the device's name (GPU model
    or CPU model name) and the date and time (ISO 8601, local time with its UTC offset)."""
    from . import __version__

    return {
        "phaseguard": __version__,
        "torch": torch.__version__,
        "device": device_name(device),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _result(correct: torch.Tensor, seconds: float) -> AttackResult:
    n = len(correct)
    hits = int(correct.sum())
    return AttackResult(hits / n if n else float("nan"), hits, n, seconds)


def _gradient_fractions(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Fractions of images whose input gradient of the CE loss is exactly zero, and whose
    logits or input gradient hold a NaN or an infinity."""
    x = x.clone().requires_grad_(True)
    with attack_mode(model):
        logits = model(x).float()
        loss = F.cross_entropy(logits, y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    grad, logits = grad.flatten(1), logits.detach()
    nonfinite = ~(torch.isfinite(grad).all(1) & torch.isfinite(logits).all(1))
    zero = (grad.abs().amax(1) == 0) & ~nonfinite
    return zero.float().mean().item(), nonfinite.float().mean().item()


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
    device: str | torch.device | None = None,
) -> list[SanityCheck]:
    """The usual signs of a broken evaluation or of gradient masking, checked on one model.

    x: the evaluated images, uint8 [N, C, H, W] or float in [0, 1]; y: int64 [N].
    correct: per attack run, bool [N] (True where the model stayed correct); entries: the
    registered :class:`~phaseguard.attacks.EvalAttack` of each; breakdown: AutoAttack's
    {attack: images it broke first}, when it ran. Checks, in this order: every attack scores at
    most the clean accuracy; PGD at eps 0 changes nothing; each attack scores at most its
    :class:`~phaseguard.attacks.Ceiling` (with slack when either is randomised); black-box
    attacks break nothing the white-box ones left correct (black-box entries, and AutoAttack's
    black-box attacks); logits and input gradients are finite; input gradients are not all
    zero. The model runs on its own device
    (``device``, when given, must be that one: :func:`~phaseguard.predict.run_device`).
    """
    device = run_device(model, device)
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
    frac, broken = _gradient_fractions(model, first, y[:batch_size].to(device))
    checks.append(
        SanityCheck(
            "logits and input gradients are finite",
            broken == 0,
            f"{100 * broken:.1f}% of images have a NaN or infinite logit or input gradient"
            + (" (a broken model: its accuracies mean nothing)" if broken else ""),
        )
    )
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
    device: str | torch.device | None = None,
    seed: int = 0,
    aa_state: Path | None = None,
    aa_attacks: list[str] | None = None,
    info: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> EvalReport:
    """Run ``attacks`` (names from :func:`~phaseguard.attacks.list_eval_attacks`) on images x
    (uint8 [N, C, H, W], or float in [0, 1], any device) with labels y (int64 [N]); return the
    report with the per-sample worst case and the :func:`sanity_checks`.

    The model runs where its parameters are, like torchattacks' attacks: the images are moved
    there one batch at a time and the model is never moved. ``device`` may name that device;
    another one is a ConfigError. The attacks run in the given order, each after
    ``torch.manual_seed(seed)``. ``aa`` is AutoAttack's standard version, or its custom version
    with ``aa_attacks``; its progress is saved in ``aa_state`` (resumed from there when the file
    exists).

    ``log`` receives one line per finished attack, ``pgd20: 51.60% (516/1000), 3.5 s`` (and one
    per finished AutoAttack attack); ``progress`` shows a bar per attack on stderr while it is
    a terminal. ``info`` is copied into the report, with ``info["environment"]`` added
    (:func:`environment`: versions, device name, date).

    Raises:
        ConfigError: an unknown attack name (before anything runs; the message lists the known
            ones), or ``device`` is not the model's.
    """
    entries = {name: eval_attack(name) for name in attacks}
    device = run_device(model, device)
    info = {**(info or {}), "environment": environment(device)}
    report = EvalReport(eps=eps, norm=norm, n=len(y), info=info)
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
        log=log,
    )
    correct: dict[str, torch.Tensor] = {}
    for name, entry in entries.items():
        torch.manual_seed(seed)
        task.progress = name if progress else None
        start = time.perf_counter()
        ok = entry.run(task)
        correct[name] = ok
        result = report.attacks[name] = _result(ok, time.perf_counter() - start)
        if log is not None:
            log(
                f"{name}: {100 * result.accuracy:.2f}% ({result.correct}/{result.n}), "
                f"{result.seconds:.1f} s"
            )
    if correct:
        worst = torch.stack(list(correct.values())).all(0)
        report.worst_case = _result(worst, sum(r.seconds for r in report.attacks.values()))
    report.sanity = sanity_checks(
        model, x, y, correct, entries, report.autoattack_breakdown, batch_size, device
    )
    return report
