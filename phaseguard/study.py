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

Every run lives in ``OUT/runs/LABEL`` and goes through train -> eval -> analyze; each step is
skipped when its output is already there for what it depends on (training: the epochs; eval and
analyze: the weights of the best checkpoint, the number of images, the attacks), and an interrupted
training resumes from its last checkpoint, so a study is continued by running the same command
again; each step logs a line when it starts and one with its seconds when it ends. The summary
(``study.json``, ``summary.md``, ``study.png``) is rebuilt from the run folders at the end: mean
and sample standard deviation over seeds per method, one row per ablation
(:mod:`phaseguard.study_summary`).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .attacks import eval_attack
from .config import PRESETS_DIR, Config, load_config, load_yaml, resolve_config
from .errors import ConfigError, Interrupted
from .files import write_json
from .fingerprint import weights_sha256
from .lock import folder_lock
from .run_dir import RunDir
from .study_summary import read_timings, summarize, write_summary
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


# -- one run ---------------------------------------------------------------------------------
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


#: ``train`` settings that cannot change a run's results: a run trained with other values of
#: them is the same run (the study's values are used from then on).
NOT_IDENTITY = ("progress", "threads", "device", "compile")


def _identity(cfg: Config) -> dict[str, Any]:
    """What makes a run that run: its config without :data:`NOT_IDENTITY`."""
    tree = cfg.to_dict()
    tree["train"] = {k: v for k, v in tree["train"].items() if k not in NOT_IDENTITY}
    return tree


def _config(study_run: StudyRun, run: RunDir) -> Config:
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
    study_run: StudyRun, run: RunDir, spec: StudySpec
) -> list[tuple[str, Callable[[], bool], Callable[[], object]]]:
    """(name, is it done?, do it) for train -> eval -> analyze; asked in order, after the
    previous step ran, since each depends on the checkpoint the one before leaves."""
    from .runs import analyze_run, evaluate_run
    from .training import train

    cfg = _config(study_run, run)
    return [
        (
            "train",
            lambda: _trained(run, cfg),
            lambda: train(cfg, run.root, resume=run.has_checkpoint()),
        ),
        (
            "eval",
            lambda: _evaluated(run, spec),
            lambda: evaluate_run(run.root, attacks=spec.eval_attacks, n=spec.eval_n),
        ),
        (
            "analyze",
            lambda: _measured(run.analysis_json, run, spec.analyze_n) is not None,
            lambda: analyze_run(run.root, n=spec.analyze_n),
        ),
    ]


def run_study(
    spec: StudySpec, out: str | Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, evaluate and analyze every run not yet done, then write and return the summary,
    holding the study folder's lock (:mod:`phaseguard.lock`) and each run folder's in turn.

    Raises:
        FolderLocked: another process is writing into ``out`` or one of its runs.
        Interrupted: SIGINT or SIGTERM stopped it (the message says how to continue).
    """
    out = Path(out)
    with folder_lock(out):
        (out / "runs").mkdir(parents=True, exist_ok=True)
        timings = read_timings(out)
        for i, study_run in enumerate(spec.runs, 1):
            run = RunDir(out / "runs" / study_run.label)
            with folder_lock(run.root):
                for step, done, do in _steps(study_run, run, spec):
                    where = f"[{i}/{len(spec.runs)}] {study_run.label}: {step}"
                    if done():  # a skipped step keeps the time it took when it ran
                        log(f"{where} (done)")
                        continue
                    log(f"{where} started")
                    start = time.perf_counter()
                    try:
                        do()
                    except KeyboardInterrupt as exc:
                        signum = getattr(exc, "signum", signal.SIGINT)
                        raise Interrupted(
                            f"study stopped by {signal.Signals(signum).name} in {where}; "
                            "run the same command again to continue",
                            signum,
                        ) from None
                    seconds = round(time.perf_counter() - start, 1)
                    log(f"{where} finished in {seconds:.0f} s")
                    timings.setdefault(study_run.label, {})[step] = seconds
                    write_json(out / "timings.json", timings)
        summary = summarize(spec, out)
        write_summary(summary, out)
    return summary
