"""Adapter around the official AutoAttack (Croce & Hein, ICML 2020; PyPI package ``pyautoattack``).

:func:`run_autoattack` runs AutoAttack's own code (``AutoAttack.run_standard_evaluation``) and
returns which images stay correctly classified. What the adapter adds:

- Resuming. ``pyautoattack`` 0.2.0 has a ``state_path`` option, but its state files cannot be
  resumed: the set of attacks is written as its Python repr, so reloading always fails with
  "The state was created with a different set of attacks", and a restored state would then hit
  an unbound variable. The adapter therefore keeps its own JSON state file (format
  ``phaseguard-autoattack-state``) and drives AutoAttack one attack and one batch at a time,
  saving after each batch. The batches are those AutoAttack would form itself (the still-robust
  images in index order), so a resumed run computes what an uninterrupted one does.
- Memory layout. AutoAttack allocates its gradient buffers like the input and reshapes them with
  ``.view``, which fails for channels_last inputs (APGD-T, APGD-DLR); batches are handed over
  contiguous, so channels_last models and inputs work on CPU and GPU.
- The model contract of :mod:`phaseguard.attacks`: eval mode during the run, every module's mode
  restored afterwards, parameters frozen; the run happens on the model's device.
- Progress: one line per finished attack (``log``) and, while stderr is a terminal, a bar per
  attack over the images it attacks, with the forward passes done so far (``progress``).
  AutoAttack's own logging is left off: driven one batch at a time, it would repeat its header
  for every batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from phaseguard.attacks.base import attack_mode, check_batch, check_count, check_nonnegative
from phaseguard.errors import ConfigError
from phaseguard.files import write_text
from phaseguard.fingerprint import tensors_sha256, weights_sha256
from phaseguard.predict import progress_bar, run_device

AA_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
#: The black-box ones among them (the others use gradients): an image one of them breaks first
#: was left correct by the white-box attacks run before it, a sign of gradient masking.
AA_BLACK_BOX = ("square",)
VERSIONS = ("standard", "custom")
_NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
STATE_FORMAT = "phaseguard-autoattack-state"


@dataclass
class _Settings:
    """What a state file must agree on to be resumed."""

    n: int
    eps: float
    norm: str
    version: str
    attacks: list[str]
    seed: int
    data_sha256: str
    model_sha256: str


@dataclass
class _State:
    """Progress of one evaluation: robust flags, finished attacks, position in the current one."""

    settings: _Settings
    robust: Tensor | None = None  # bool [N] on the CPU, None before the clean pass
    done: tuple[str, ...] = ()
    next_index: int = 0  # the current attack has covered every image below this index
    broken_by: dict[str, int] = field(default_factory=dict)  # images each attack broke first

    def save(self, path: Path | None) -> None:
        if path is None:
            return
        flags = None if self.robust is None else "".join(map(str, self.robust.int().tolist()))
        doc = {
            "format": STATE_FORMAT,
            "version": 1,
            "settings": asdict(self.settings),
            "robust": flags,
            "done": list(self.done),
            "next_index": self.next_index,
            "broken_by": self.broken_by,
        }
        write_text(path, json.dumps(doc))

    @classmethod
    def open(
        cls, path: Path | None, settings: _Settings, log: Callable[[str], None] | None = None
    ) -> _State:
        """The state saved at ``path`` if it was written for ``settings``, else a fresh state
        (a state of another model, other images or other settings, or an unreadable one, is
        never reused; ``log`` is told why it starts over)."""
        if path is None or not path.exists():
            return cls(settings)
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != STATE_FORMAT:
                raise ValueError(f"not a {STATE_FORMAT} file")
            saved = _Settings(**doc["settings"])
            flags = doc["robust"]
            robust = None if flags is None else torch.tensor([c == "1" for c in flags])
            state = cls(
                saved, robust, tuple(doc["done"]), int(doc["next_index"]), dict(doc["broken_by"])
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"it is unreadable ({exc})"
        else:
            if saved == settings:
                return state
            changed = [k for k, v in asdict(settings).items() if getattr(saved, k) != v]
            reason = f"it was written for another {', '.join(changed)}"
        if log is not None:
            log(f"AutoAttack: not resuming from {path}: {reason}; starting over")
        return cls(settings)


def _check_options(norm: str, version: str, attacks: list[str] | None) -> str:
    if norm.lower() not in _NORMS:
        raise ConfigError(f"unknown AutoAttack norm {norm!r}; expected Linf, L2 or L1")
    if version not in VERSIONS:
        raise ConfigError(
            f"unknown AutoAttack version {version!r}; expected one of {', '.join(VERSIONS)}"
        )
    if version == "standard" and attacks is not None:
        raise ConfigError(
            "AutoAttack attacks are chosen by version='standard'; pass "
            "version='custom' to run a list of attacks"
        )
    if version == "custom":
        if not attacks:
            raise ConfigError("AutoAttack version='custom' needs a non-empty list of attacks")
        unknown = [a for a in attacks if a not in AA_ATTACKS]
        if unknown:
            raise ConfigError(
                f"unknown AutoAttack attack {unknown[0]!r}; known attacks: {', '.join(AA_ATTACKS)}"
            )
    return _NORMS[norm.lower()]


def run_autoattack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float = 8 / 255,
    norm: str = "Linf",
    version: str = "standard",
    attacks: list[str] | None = None,
    batch_size: int = 250,
    state_path: Path | str | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    breakdown: dict[str, int] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Tensor:
    """Which images survive AutoAttack: bool [N], True where the model stays correct.

    Args:
        model: classifier, [B, C, H, W] in [0, 1] -> logits [B, classes]. Run where its
            parameters are (never moved), in eval mode with frozen parameters; every module's
            mode is restored afterwards.
        x: images, float [N, C, H, W] in [0, 1] (any device, any memory layout; moved to the
            model's device one batch at a time).
        y: labels, int64 [N].
        eps: radius of the threat model.
        norm: "Linf", "L2" or "L1" (case-insensitive).
        version: "standard" (APGD-CE, APGD-T, FAB-T, Square with AutoAttack's settings) or
            "custom" (``attacks``, with AutoAttack's per-attack defaults, e.g. 5 restarts of
            100 iterations for APGD-CE).
        attacks: for ``version="custom"``: names from ``AA_ATTACKS``, run in this order.
        batch_size: images per AutoAttack call.
        state_path: JSON file that records the progress after every batch; if it exists and
            was written for the same model weights, images, labels, eps, norm, version, attacks
            and seed, the run resumes from it; otherwise it starts over (``log`` says why).
        seed: AutoAttack's seed (reset at every batch, as AutoAttack does).
        device: None (the model's device) or that device named explicitly.
        breakdown: if given, filled with {attack: images it was the first to break}, e.g. to
            notice a black-box attack (square) succeeding where the white-box ones failed.
        progress: a bar per attack on stderr while it is a terminal (nothing otherwise).
        log: receives one line per finished attack, e.g.
            ``AutoAttack apgd-ce: 47.20% (236/500), 95.3 s`` (robust accuracy so far).

    Returns:
        bool [N] on x's device: correctly classified after every attack run.

    Raises:
        ConfigError: invalid option, ``device`` is not the model's, or ``pyautoattack`` is not
            installed.
        DataError: x or y malformed (x must be a float batch in [0, 1]).
    """
    check_batch(x, y)
    aa_norm = _check_options(norm, version, attacks)
    check_nonnegative("eps", eps)
    check_count("batch_size", batch_size, 1)
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:
        raise ConfigError(
            "run_autoattack needs the official AutoAttack: pip install pyautoattack"
        ) from exc
    device = run_device(model, device)
    path = None if state_path is None else Path(state_path)
    with attack_mode(model):
        aa = AutoAttack(
            model,
            attacks=attacks,
            device=device,
            eps=float(eps),
            norm=aa_norm,
            seed=seed,
            version=version,
        )
        aa.verbose = False
        names = list(aa.attacks_to_run)
        settings = _Settings(
            len(y),
            float(eps),
            aa_norm,
            version,
            names,
            seed,
            tensors_sha256(x.float(), y) if path is not None else "",
            weights_sha256(model) if path is not None else "",
        )
        state = _State.open(path, settings, log)
        if state.robust is None:
            state.robust = _clean_flags(model, x, y, batch_size, device)
            state.save(path)
        for name in names:
            if name in state.done:
                continue
            start = time.perf_counter()
            aa.attacks_to_run = [name]
            _run_one(aa, x, y, state, path, batch_size, device, f"AutoAttack {name}", progress)
            state.done += (name,)
            state.next_index = 0
            state.save(path)
            if log is not None:
                robust = int(state.robust.sum())
                log(
                    f"AutoAttack {name}: {100 * robust / len(y):.2f}% ({robust}/{len(y)}), "
                    f"{time.perf_counter() - start:.1f} s"
                )
    if breakdown is not None:
        breakdown.update(state.broken_by)
    return state.robust.to(x.device)


def _clean_flags(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, device: torch.device
) -> Tensor:
    flags = []
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(x[i : i + batch_size].to(device).contiguous())
            flags.append((logits.argmax(1) == y[i : i + batch_size].to(device)).cpu())
    return torch.cat(flags)


def _run_one(
    aa: Any,
    x: Tensor,
    y: Tensor,
    state: _State,
    path: Path | None,
    batch_size: int,
    device: torch.device,
    label: str,
    progress: bool,
) -> None:
    """Run AutoAttack's current single attack on the robust images from state.next_index on,
    with a progress bar ``label`` when ``progress``."""
    assert state.robust is not None
    index = torch.arange(len(y))
    left = int((state.robust & (index >= state.next_index)).sum())
    with progress_bar(left, label if progress else None) as bar, _forwards_shown(aa.model, bar):
        while True:
            todo = (state.robust & (index >= state.next_index)).nonzero().squeeze(1)[:batch_size]
            if todo.numel() == 0:
                return
            xb = x[todo.to(x.device)].to(device).contiguous()
            yb = y[todo.to(y.device)].to(device)
            _, y_adv = aa.run_standard_evaluation(xb, yb, batch_size=len(todo))
            survived = (y_adv == yb).cpu()
            name = aa.attacks_to_run[0]
            state.broken_by[name] = state.broken_by.get(name, 0) + int((~survived).sum())
            state.robust[todo] = survived
            state.next_index = int(todo[-1]) + 1
            state.save(path)
            bar.update(len(todo))


@contextmanager
def _forwards_shown(model: nn.Module, bar: Any) -> Iterator[None]:
    """Show the model's forward passes so far on an active ``bar`` (at most twice a second):
    an AutoAttack batch can take minutes between two updates of the image count."""
    if bar.disable:
        yield
        return
    calls, shown = 0, time.monotonic()

    def count(*_: Any) -> None:
        nonlocal calls, shown
        calls += 1
        if time.monotonic() - shown >= 0.5:
            shown = time.monotonic()
            bar.set_postfix_str(f"{calls} forward passes")

    handle = model.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
