"""One run of a study: train -> eval -> analyze in ``OUT/runs/LABEL``, each step done only once.

Every executor (:mod:`phaseguard.study_executors`) does a run through :func:`run_one`, in its own
process or in a Ray worker, which holds the run folder's lock (:mod:`phaseguard.lock`) while it
works in it. A step is skipped when its output is there for what it depends on (training: the
epochs in ``log.csv``; eval and analyze: the weights of the best checkpoint, the number of
images, the attacks), and an interrupted training resumes from its last checkpoint, so whichever
process does a run next, with whichever executor, continues where the last one stopped.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .errors import ConfigError, Interrupted, PhaseguardError
from .fingerprint import weights_sha256
from .hardware import configure_threads
from .lock import folder_lock
from .run_dir import RunDir
from .study_summary import SPANS
from .user_modules import import_modules

if TYPE_CHECKING:
    from .study import StudyRun, StudySpec

#: ``train`` settings that cannot change a run's results: a run trained with other values of
#: them is the same run (the study's values are used from then on).
NOT_IDENTITY = ("progress", "threads", "device", "compile")


@dataclass
class RunOutcome:
    """What :func:`run_one` did: the seconds and the wall-clock span (Unix times of start and
    end) of each step it ran (not of the steps it found done), and why the run failed."""

    label: str
    seconds: dict[str, float] = field(default_factory=dict)
    spans: dict[str, list[float]] = field(default_factory=dict)
    error: str | None = None  # "train failed: loss became NaN ..."; None: every step is done

    def add_to(self, timings: dict[str, dict[str, Any]]) -> None:
        """Record the steps this run ran in ``timings`` (what ``timings.json`` holds); a step it
        found done keeps the seconds it took when it ran."""
        entry = timings.setdefault(self.label, {})
        entry.update(self.seconds)
        entry.setdefault(SPANS, {}).update(self.spans)


def _measured(path: Path, run: RunDir, n: int) -> dict[str, Any] | None:
    """The JSON at ``path`` (eval.json, analysis.json) when it measured the weights of the run's
    best checkpoint on ``n`` images, else None (missing, unreadable or stale: measure again)."""
    from .loading import load_model

    try:
        done = json.loads(path.read_text())
        measured = done["info"]["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    best = weights_sha256(load_model(run.root, which="best", device="cpu").model)
    return done if measured == best and done.get("n") == n else None


def _trained(run: RunDir, cfg: Config) -> bool:
    from .training.logger import read_log

    return run.log_csv.is_file() and len(read_log(run.log_csv)) >= cfg.train.epochs


def _identity(cfg: Config) -> dict[str, Any]:
    """What makes a run that run: its config without :data:`NOT_IDENTITY`."""
    tree = cfg.to_dict()
    tree["train"] = {k: v for k, v in tree["train"].items() if k not in NOT_IDENTITY}
    return tree


def run_config(study_run: StudyRun, run: RunDir) -> Config:
    """The run's config (with the precision and layout the run resolved when it started);
    refused when the folder was trained with another one (:func:`_identity`)."""
    from .training import resume_config
    from .training.precision import adopt_resolved

    cfg = study_run.load()
    if not run.has_checkpoint():
        return cfg
    stored = resume_config(run.root)
    cfg = adopt_resolved(cfg, stored)
    if _identity(stored) != _identity(cfg):
        raise ConfigError(
            f"{run.root} was trained with another config than the study now asks for; "
            "remove that folder or use another --out"
        )
    return cfg


def _evaluated(run: RunDir, spec: StudySpec) -> bool:
    done = _measured(run.eval_json, run, spec.eval_n)
    return done is not None and set(spec.eval_attacks) <= set(done.get("attacks", ()))


def _steps(
    cfg: Config, run: RunDir, spec: StudySpec
) -> list[tuple[str, Callable[[], bool], Callable[[], object]]]:
    """(name, is it done?, do it) for train -> eval -> analyze, all on ``train.device``; asked
    in order, after the previous step ran, since each depends on the checkpoint the one before
    leaves."""
    from .runs import analyze_run, evaluate_run
    from .training import train

    device = cfg.train.device
    return [
        (
            "train",
            lambda: _trained(run, cfg),
            # config.yaml is there from the start: a training stopped before its first
            # checkpoint (killed, or failed and since fixed) starts again from scratch
            lambda: train(cfg, run.root, resume=run.config.is_file()),
        ),
        (
            "eval",
            lambda: _evaluated(run, spec),
            lambda: evaluate_run(run.root, attacks=spec.eval_attacks, n=spec.eval_n, device=device),
        ),
        (
            "analyze",
            lambda: _measured(run.analysis_json, run, spec.analyze_n) is not None,
            lambda: analyze_run(run.root, n=spec.analyze_n, device=device),
        ),
    ]


def error_line(exc: BaseException) -> str:
    """The first non-blank line of ``exc``'s message, after its type unless it is one of
    phaseguard's errors (whose messages name the problem themselves)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return text if isinstance(exc, PhaseguardError) else f"{type(exc).__name__}: {text}"


def run_one(
    study_run: StudyRun,
    out: Path,
    spec: StudySpec,
    log: Callable[[str], None],
    threads: int | None = None,
    device: str | None = None,
) -> RunOutcome:
    """Do the steps of ``study_run`` in ``out/runs/LABEL`` that are not done yet, holding the
    run folder's lock. ``log`` gets one line per step: ``train (done)``, or ``train started``
    and ``train finished in 12 s``.

    ``threads``: torch's CPU threads for every step (as ``train.threads``); None: the run's
    ``train.threads``, else the cores this process may use
    (:func:`phaseguard.hardware.configure_threads`). Eval and analyze use the same count as
    training. ``device``: the device of every step (as ``train.device``); None: the run's.

    An exception in a step (or in taking the lock, or in loading the config) ends the run: the
    outcome's ``error`` says which step failed and why on one line, and the steps after it are
    not tried; exceptions other than phaseguard's and OSError also print their traceback on
    stderr.

    Raises:
        Interrupted: KeyboardInterrupt (SIGINT, or SIGTERM in the ``phaseguard`` command).
    """
    settings = {"train.threads": threads, "train.device": device}
    overrides = [f"{key}={value}" for key, value in settings.items() if value is not None]
    study_run = replace(study_run, overrides=[*study_run.overrides, *overrides])
    run = RunDir(Path(out) / "runs" / study_run.label)
    outcome = RunOutcome(study_run.label)
    step = "setup"
    try:
        with folder_lock(run.root):
            import_modules(study_run.load().imports)
            cfg = run_config(study_run, run)
            configure_threads(cfg.train.threads)
            for step, done, do in _steps(cfg, run, spec):
                if done():
                    log(f"{step} (done)")
                    continue
                log(f"{step} started")
                start, wall = time.perf_counter(), time.time()
                do()
                outcome.seconds[step] = round(time.perf_counter() - start, 1)
                outcome.spans[step] = [round(wall, 3), round(time.time(), 3)]
                log(f"{step} finished in {outcome.seconds[step]:.0f} s")
    except KeyboardInterrupt as exc:
        raise Interrupted.of(
            exc,
            "study ",
            f" in {study_run.label}: {step}; run the same command again to continue",
        ) from None
    except Exception as exc:  # the run failed; the study goes on with the others
        if not isinstance(exc, PhaseguardError | OSError):
            traceback.print_exc()
        outcome.error = f"{step} failed: {error_line(exc)}"
    return outcome
