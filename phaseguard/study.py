"""``phaseguard study``: the paper's comparison as one resumable command.

A study file (the presets: ``phaseguard/presets/study/*.yaml``) names one training config per
method (a preset name or a file relative to the study file), the seeds, DAT's ablations and the
evaluation::

    methods: {dat: small/fashion_mnist_dat, pgd_at: my_pgd_at.yaml, trades: ..., mart: ...}
    seeds: [0, 1, 2]                 # every method, every seed (train.seed=s)
    overrides: []                    # applied to every run
    ablations:                       # one run each: the ablation_of method, first seed
      ablation_of: dat
      runs: {no_js: [method.js=false], ...}
    eval: {attacks: [natural, pgd20, cw, aa], n: 500}   # one summary column per attack
    analyze: {n: 500}

Every run lives in ``OUT/runs/LABEL`` and goes through train -> eval -> analyze
(:mod:`phaseguard.study_run`); each step is skipped when its output is already there for what it
depends on (training: the epochs; eval and analyze: the weights of the best checkpoint, the number
of images, the attacks), and an interrupted training resumes from its last checkpoint, so a study
is continued by running the same command again, with either executor; each step logs a line when
it starts and one with its seconds when it ends. The runs are done one after another in this
process or in parallel as Ray tasks (:mod:`phaseguard.study_executors`); a run that fails is
reported and the others go on. ``timings.json`` gets each run's seconds and wall-clock spans per
step as the run ends. The summary (``study.json``, ``summary.md``, ``study.png``) is rebuilt from
the run folders when every run is done: mean and sample standard deviation over seeds per method,
one row per ablation (:mod:`phaseguard.study_summary`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .attacks import eval_attack
from .config import PRESETS_DIR, Config, load_config, load_yaml, resolve_config
from .errors import ConfigError, PhaseguardError
from .files import write_json
from .lock import folder_lock
from .run_dir import RunDir
from .study_executors import Executor, LocalExecutor
from .study_run import RunOutcome, run_config
from .study_summary import load_timings, summarize, write_summary
from .user_modules import import_modules

STUDY_PRESETS_DIR = PRESETS_DIR / "study"
#: The evaluation attacks of a study file without ``eval.attacks``.
DEFAULT_EVAL_ATTACKS = ["natural", "pgd20", "cw", "aa"]


@dataclass
class StudyRun:
    """One training run of a study: its folder name, group, config file, overrides and the
    modules it imports besides its config's own (``phaseguard study --import``)."""

    label: str
    group: str  # the method name, or "ablation"
    config: Path
    overrides: list[str]
    imports: tuple[str, ...] = ()

    def load(self) -> Config:
        cfg = load_config(self.config, self.overrides)
        cfg.imports = list(dict.fromkeys([*cfg.imports, *self.imports]))
        return cfg


@dataclass
class StudySpec:
    """A study file, resolved: the runs in the order they are done and what each run gets."""

    path: Path
    runs: list[StudyRun]
    eval_attacks: list[str]
    eval_n: int
    analyze_n: int


def _mapping(tree: Any, where: str) -> dict[str, Any]:
    if not isinstance(tree, dict):
        raise ConfigError(f"{where} must be a mapping")
    return tree


def study_preset_names() -> list[str]:
    """Names of the study presets shipped with phaseguard (``small``, ``full``)."""
    return sorted(p.stem for p in STUDY_PRESETS_DIR.glob("*.yaml"))


def resolve_study(path: str | Path | None = None, preset: str | None = None) -> Path:
    """The study file: ``path``, or the study preset named ``preset``."""
    if (path is None) == (preset is None):
        raise ConfigError("give a study file or --preset NAME (not both)")
    if preset is not None:
        if preset not in study_preset_names():
            known = ", ".join(study_preset_names())
            raise ConfigError(f"unknown study preset '{preset}' (known: {known})")
        path = STUDY_PRESETS_DIR / f"{preset}.yaml"
    path = Path(path)
    if not path.is_file():
        hint = f" (the preset: --preset {path})" if str(path) in study_preset_names() else ""
        raise ConfigError(f"study file {path} does not exist{hint}")
    return path


def load_study(
    path: str | Path, overrides: list[str] | None = None, imports: list[str] | None = None
) -> StudySpec:
    """Read and check a study file; ``overrides`` (``key=value``) go to every run after the
    file's own, ``imports`` (module names) into every run's config. Every run's config is
    loaded once here to catch errors early, and the modules it imports are imported."""
    path = Path(path)
    tree = _mapping(load_yaml(path.read_bytes(), f"study {path}"), str(path))
    unknown = set(tree) - {"methods", "seeds", "overrides", "ablations", "eval", "analyze"}
    if unknown:
        raise ConfigError(f"{path}: unknown key '{sorted(unknown)[0]}'")
    methods = _mapping(tree.get("methods"), f"{path}: methods")
    seeds = [int(s) for s in tree.get("seeds", [0])]
    if not methods or not seeds:
        raise ConfigError(f"{path}: needs at least one method and one seed")
    common = [str(o) for o in tree.get("overrides", [])] + list(overrides or [])
    configs = {name: resolve_config(str(cfg), path.parent) for name, cfg in methods.items()}
    extra_imports = tuple(imports or ())
    runs = [
        StudyRun(f"{name}_s{seed}", name, cfg, [*common, f"train.seed={seed}"], extra_imports)
        for name, cfg in configs.items()
        for seed in seeds
    ]
    ablations = _mapping(tree.get("ablations", {"runs": {}}), f"{path}: ablations")
    of = ablations.get("ablation_of", "dat")
    if ablations.get("runs") and of not in methods:
        raise ConfigError(f"{path}: ablation_of '{of}' is not one of the methods")
    for name, extra in _mapping(ablations.get("runs", {}), f"{path}: ablations.runs").items():
        runs.append(
            StudyRun(
                f"{of}_{name}_s{seeds[0]}",
                "ablation",
                configs[of],
                [*common, f"train.seed={seeds[0]}", *map(str, extra)],
                extra_imports,
            )
        )
    for run in runs:
        import_modules(run.load().imports)
    ev = _mapping(tree.get("eval", {}), f"{path}: eval")
    attacks = [str(a) for a in ev.get("attacks", DEFAULT_EVAL_ATTACKS)]
    for name in attacks:
        eval_attack(name)
    return StudySpec(
        path,
        runs,
        attacks,
        int(ev.get("n", 500)),
        int(_mapping(tree.get("analyze", {}), f"{path}: analyze").get("n", 500)),
    )


class StudyFailed(PhaseguardError):
    """Some runs of a study failed (each reported its error); the others are done."""


def run_study(
    spec: StudySpec,
    out: str | Path,
    log: Callable[[str], None] = print,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Train, evaluate and analyze every run not yet done with ``executor`` (default: one run
    after another in this process; :mod:`phaseguard.study_executors`), then write and return
    the summary. Holds the study folder's lock (:mod:`phaseguard.lock`) throughout; each run
    folder's lock is held by the process that does the run. ``timings.json`` is written as each
    run ends. A failed run does not stop the others.

    Raises:
        FolderLocked: another process is writing into ``out``.
        ConfigError: a run folder was trained with another config (before any run starts).
        StudyFailed: some runs failed; the summary is not written.
        Interrupted: SIGINT or SIGTERM stopped it (the message says how to continue).
    """
    out = Path(out)
    with folder_lock(out):
        (out / "runs").mkdir(parents=True, exist_ok=True)
        for study_run in spec.runs:  # refuse another config before hours of other runs
            run_config(study_run, RunDir(out / "runs" / study_run.label))
        timings = load_timings(out)
        failed: set[str] = set()

        def record(outcome: RunOutcome) -> None:
            if outcome.error:
                failed.add(outcome.label)
            if outcome.seconds:
                outcome.add_to(timings)
                write_json(out / "timings.json", timings)

        (executor or LocalExecutor()).run(spec, out, log, record)
        if failed:
            labels = [r.label for r in spec.runs if r.label in failed]
            raise StudyFailed(
                f"{len(labels)} of {len(spec.runs)} runs failed ({', '.join(labels)}; the "
                "reasons are above); run the same command again to retry them"
            )
        summary = summarize(spec, out)
        write_summary(summary, out)
    return summary
