"""Where a study's runs are done: one after another in this process, or in parallel as Ray tasks.

Both executors do each run through :func:`phaseguard.study_run.run_one` (its steps in order,
holding the run folder's lock), log a line per step prefixed with the run, report a failed run
on one line and go on with the others, and hand every run's :class:`RunOutcome` to the
driver (:func:`phaseguard.study.run_study`) as soon as the run has finished; the driver holds
the study folder's lock, writes ``timings.json`` and, once every run is done, the summary.

- :class:`LocalExecutor`: the runs one after another in this process, with the threads of the
  run's ``train.threads``, else the cores the process may use; log lines
  ``[2/5] pgd_at_s1: eval started``.
- :class:`RayExecutor`: one Ray task per run, named after the run, as many at once as the
  cluster's CPUs and GPUs allow. The worker sets torch's threads to the task's CPUs for all
  three steps and prints its lines (``[pgd_at_s1] eval started``) on stderr, which Ray forwards
  to the driver; the driver logs ``[pgd_at_s1] finished (3/5 runs)``. A worker that dies (killed,
  out of memory, its node lost) is replaced and its task tried again, up to
  :data:`MAX_RETRIES` times: the retry takes over the run folder's lock the dead process left
  and resumes training from its last checkpoint. Ray is imported only here, from the
  ``[ray]`` extra.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cpu_memory import keep_freed_memory
from .errors import ConfigError, Interrupted, PhaseguardError
from .extras import require
from .study_run import RunOutcome, error_line, run_one

if TYPE_CHECKING:
    from .study import StudyRun, StudySpec

#: Tries of a Ray task after the first one when its worker died (an exception raised in a run
#: is not tried again: it is reported, and the next ``phaseguard study`` tries the run again).
MAX_RETRIES = 3
#: How often the driver asks Ray which runs have finished.
POLL_SECONDS = 0.5

Log = Callable[[str], None]
Record = Callable[[RunOutcome], None]


def _prefixed(log: Log, prefix: str) -> Log:
    return lambda line: log(f"{prefix} {line}")


@dataclass(frozen=True)
class LocalExecutor:
    """The runs one after another in this process."""

    def run(self, spec: StudySpec, out: Path, log: Log, record: Record) -> None:
        """Do every run of ``spec`` in ``out``; ``record`` gets each run's outcome."""
        for i, study_run in enumerate(spec.runs, 1):
            run_log = _prefixed(log, f"[{i}/{len(spec.runs)}] {study_run.label}:")
            outcome = run_one(study_run, out, spec, run_log)
            if outcome.error:
                run_log(outcome.error)
            record(outcome)


def _run_task(
    study_run: StudyRun, out: Path, spec: StudySpec, threads: int, device: str | None
) -> RunOutcome:
    """One run in a Ray worker (a module-level function: workers import it by name)."""
    keep_freed_memory()  # as the phaseguard command does
    prefix = f"[{study_run.label}]"
    return run_one(
        study_run,
        out,
        spec,
        lambda line: print(f"{prefix} {line}", file=sys.stderr, flush=True),
        threads=threads,
        device=device,
    )


def _check_listening(address: str) -> None:
    """Refuse at once a ``host:port`` where nothing listens (Ray would try for minutes);
    other forms of address (``auto``, ``ray://...``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise PhaseguardError(
            f"cannot join the Ray cluster at {address}: {exc.strerror or exc} "
            "(start it with: ray start --head)"
        ) from None


@dataclass(frozen=True)
class RayExecutor:
    """Every run as one Ray task needing ``cpus_per_run`` CPUs (and as many torch threads) and
    ``gpus_per_run`` GPUs (a fraction shares a GPU; 0: the runs stay on the CPU).

    The tasks go to the Ray instance this process is already connected to (left running at
    the end), else to the cluster at ``address`` (``auto``: the one this machine belongs to),
    else to a new Ray instance started here with this machine's resources; a Ray joined or
    started here is disconnected or shut down at the end, whatever happens.
    """

    address: str | None = None
    cpus_per_run: int = 1
    gpus_per_run: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus_per_run < 1:
            raise ConfigError(f"--cpus-per-run {self.cpus_per_run}: must be at least 1")
        if not 0 <= self.gpus_per_run <= 1:
            raise ConfigError(
                f"--gpus-per-run {self.gpus_per_run:g}: must be in 0..1 (a run of a study "
                "trains on one GPU; train one run on several GPUs with torchrun by hand)"
            )

    def run(self, spec: StudySpec, out: Path, log: Log, record: Record) -> None:
        """Do every run of ``spec`` in ``out``; ``record`` gets each run's outcome as it ends.

        Raises:
            MissingExtraError: Ray is not installed.
            PhaseguardError: Ray cannot start, or the cluster at ``address`` cannot be joined.
            ConfigError: a run does not fit the resources of the Ray started here.
            Interrupted: SIGINT or SIGTERM stopped the driver; the runs' tasks were cancelled.
        """
        ray = require("ray", "ray", "phaseguard study --executor ray")
        started = not ray.is_initialized()
        if started:
            self._connect(ray)
        fixed = started and not self.address  # a joined cluster may grow; a Ray started here not
        try:
            self._run(ray, spec, out, log, record, fixed)
        finally:
            if started:
                ray.shutdown()

    def _connect(self, ray: Any) -> None:
        on_sigterm = signal.getsignal(signal.SIGTERM)
        try:
            if self.address:
                _check_listening(self.address)
                ray.init(address=self.address)
            else:  # "local": a new instance, even where ray start runs one on this machine
                ray.init(address="local", include_dashboard=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            what = f"join the Ray cluster at {self.address}" if self.address else "start Ray"
            raise PhaseguardError(f"cannot {what}: {error_line(exc)}") from None
        if on_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)  # ray.init replaced it by sys.exit

    def _run(
        self, ray: Any, spec: StudySpec, out: Path, log: Log, record: Record, fixed: bool
    ) -> None:
        """Submit every run, then log and record each as it ends; ``fixed``: the cluster's
        resources cannot grow (runs that do not fit them are refused)."""
        total = ray.cluster_resources()
        cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
        each = f"{self.cpus_per_run} CPU and {self.gpus_per_run:g} GPU each"
        if fixed and (self.cpus_per_run > cpus or self.gpus_per_run > gpus):
            raise ConfigError(
                f"runs of {each} do not fit the {cpus:g} CPUs and {gpus:g} GPUs of this "
                "machine; lower --cpus-per-run / --gpus-per-run"
            )
        log(f"ray: {len(spec.runs)} runs of {each} on {cpus:g} CPUs and {gpus:g} GPUs")
        task = ray.remote(_run_task)
        device = "cpu" if self.gpus_per_run == 0 else None  # else Ray's CUDA_VISIBLE_DEVICES
        pending = {}
        for study_run in spec.runs:
            ref = task.options(
                name=study_run.label,
                num_cpus=self.cpus_per_run,
                num_gpus=self.gpus_per_run,
                max_retries=MAX_RETRIES,
                retry_exceptions=False,
            ).remote(
                # paths as every node sees them on the shared file system
                replace(study_run, config=study_run.config.absolute()),
                out.absolute(),
                spec,
                self.cpus_per_run,
                device,
            )
            pending[ref] = study_run.label
        finished = 0
        try:
            while pending:
                # polled: a signal that arrives while Ray waits comes out as a KeyboardInterrupt
                # without its signal; in time.sleep the phaseguard command's handler raises it
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
                if not ready:
                    time.sleep(POLL_SECONDS)
                for ref in ready:
                    label = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # the worker died every try
                        outcome = RunOutcome(label, error=f"failed: {error_line(exc)}")
                    finished += 1
                    status = outcome.error or "finished"
                    log(f"[{label}] {status} ({finished}/{len(spec.runs)} runs)")
                    record(outcome)
        except KeyboardInterrupt as exc:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise Interrupted.of(
                exc,
                "study ",
                f"; the {len(pending)} runs not finished were cancelled; run the same command "
                "again to continue",
            ) from None


Executor = LocalExecutor | RayExecutor


def make_executor(
    name: str,
    address: str | None = None,
    cpus_per_run: int | None = None,
    gpus_per_run: float | None = None,
) -> Executor:
    """The executor ``phaseguard study --executor NAME`` (``local`` or ``ray``) gets with the
    Ray options it was given (None: not given); they are an error with ``local``."""
    if name not in ("local", "ray"):
        raise ConfigError(f"unknown executor '{name}' (local, ray)")
    if name == "ray":
        cpus = 1 if cpus_per_run is None else cpus_per_run
        return RayExecutor(address, cpus, 0.0 if gpus_per_run is None else gpus_per_run)
    options = {"--address": address, "--cpus-per-run": cpus_per_run, "--gpus-per-run": gpus_per_run}
    given = [option for option, value in options.items() if value is not None]
    if given:
        raise ConfigError(f"{given[0]} is an option of --executor ray, not of --executor {name}")
    return LocalExecutor()
