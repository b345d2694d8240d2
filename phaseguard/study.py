"""``phaseguard study``: the paper's comparison as one resumable command.

A study file (``configs/study/*.yaml``) names one training config per method, the seeds, DAT's
ablations and the evaluation::

    methods: {dat: ../small/fashion_mnist_dat.yaml, pgd_at: ..., trades: ..., mart: ...}
    seeds: [0, 1, 2]                 # every method, every seed (train.seed=s)
    overrides: []                    # applied to every run
    ablations:                       # one run each: the ablation_of method, first seed
      ablation_of: dat
      runs: {no_js: [method.js=false], ...}
    eval: {attacks: [natural, pgd20, cw, aa], n: 500}
    analyze: {n: 500}

Every run lives in ``OUT/runs/LABEL`` and goes through train -> eval -> analyze; each step is
skipped when its output is already there and newer than what it depends on, and an interrupted
training resumes from its last checkpoint, so a study is continued by running the same command
again. The summary (``study.json``, ``summary.md``, ``study.png``) is rebuilt from the run folders
at the end: mean and sample standard deviation over seeds per method, one row per ablation.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import Config, load_config
from .errors import ConfigError
from .run_dir import RunDir

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "study"
# (key, label): accuracies of eval.json's attacks, then of analysis.json's fields
ATTACK_COLUMNS = [("natural", "Natural"), ("pgd20", "PGD-20"), ("cw", "CW"), ("aa", "AA")]
PHASE_COLUMNS = [
    ("foreign_amplitude", "foreign amp."),
    ("foreign_phase", "foreign phase"),
    ("foreign_amplitude_robust", "foreign amp. PGD"),
]


@dataclass
class StudyRun:
    """One training run of a study: its folder name, group, config file and overrides."""

    label: str
    group: str  # the method name, or "ablation"
    config: Path
    overrides: list[str]

    def load(self) -> Config:
        return load_config(self.config, self.overrides)


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


def resolve_study(path: str | Path | None = None, preset: str | None = None) -> Path:
    """The study file: ``path``, or ``configs/study/PRESET.yaml`` of this source checkout."""
    if (path is None) == (preset is None):
        raise ConfigError("give a study file or --preset NAME (not both)")
    if preset is not None:
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown study preset '{preset}' (known: {', '.join(known)})")
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    return path


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read and check a study file; ``overrides`` (``key=value``) go to every run after the
    file's own. Every run's config is loaded once here to catch errors early."""
    path = Path(path)
    try:
        tree = _mapping(yaml.safe_load(path.read_text()), str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({exc})") from None
    unknown = set(tree) - {"methods", "seeds", "overrides", "ablations", "eval", "analyze"}
    if unknown:
        raise ConfigError(f"{path}: unknown key '{sorted(unknown)[0]}'")
    methods = _mapping(tree.get("methods"), f"{path}: methods")
    seeds = [int(s) for s in tree.get("seeds", [0])]
    if not methods or not seeds:
        raise ConfigError(f"{path}: needs at least one method and one seed")
    common = [str(o) for o in tree.get("overrides", [])] + list(overrides or [])
    runs = [
        StudyRun(f"{name}_s{seed}", name, path.parent / cfg, [*common, f"train.seed={seed}"])
        for name, cfg in methods.items()
        for seed in seeds
    ]
    ablations = _mapping(tree.get("ablations", {"runs": {}}), f"{path}: ablations")
    of = ablations.get("ablation_of", "dat")
    if ablations.get("runs") and of not in methods:
        raise ConfigError(f"{path}: ablation_of '{of}' is not one of the methods")
    for name, extra in _mapping(ablations.get("runs", {}), f"{path}: ablations.runs").items():
        base = path.parent / methods[of]
        runs.append(
            StudyRun(
                f"{of}_{name}_s{seeds[0]}",
                "ablation",
                base,
                [*common, f"train.seed={seeds[0]}", *map(str, extra)],
            )
        )
    for run in runs:
        run.load()
    ev = _mapping(tree.get("eval", {}), f"{path}: eval")
    return StudySpec(
        path,
        runs,
        list(ev.get("attacks", [c for c, _ in ATTACK_COLUMNS])),
        int(ev.get("n", 500)),
        int(_mapping(tree.get("analyze", {}), f"{path}: analyze").get("n", 500)),
    )


# -- one run ---------------------------------------------------------------------------------
def _newer(path: Path, than: Path) -> bool:
    return path.is_file() and than.is_file() and path.stat().st_mtime >= than.stat().st_mtime


def _trained(run: RunDir, cfg: Config) -> bool:
    from .train.logger import read_log

    return run.log_csv.is_file() and len(read_log(run.log_csv)) >= cfg.train.epochs


def _config(study_run: StudyRun, run: RunDir) -> Config:
    """The run's config (with the precision and layout the run resolved when it started);
    refused when the folder was trained with another one."""
    from .train import resume_config
    from .train.precision import adopt_resolved

    cfg = study_run.load()
    if not run.has_checkpoint():
        return cfg
    stored = resume_config(run.root)
    cfg = adopt_resolved(cfg, stored)
    if stored.to_dict() != cfg.to_dict():
        raise ConfigError(
            f"{run.root} was trained with another config than the study now asks for; "
            "remove that folder or use another --out"
        )
    return cfg


def _evaluated(run: RunDir, spec: StudySpec) -> bool:
    if not _newer(run.eval_json, run.checkpoint("best")):
        return False
    done = json.loads(run.eval_json.read_text())
    return done.get("n") == spec.eval_n and set(spec.eval_attacks) <= set(done["attacks"])


def _steps(
    study_run: StudyRun, run: RunDir, spec: StudySpec
) -> list[tuple[str, Callable[[], bool], Callable[[], object]]]:
    """(name, is it done?, do it) for train -> eval -> analyze; asked in order, after the
    previous step ran, since each depends on the checkpoint the one before leaves."""
    from .runs import analyze_run, evaluate_run
    from .train import train

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
            lambda: _newer(run.analysis_json, run.checkpoint("best")),
            lambda: analyze_run(run.root, n=spec.analyze_n),
        ),
    ]


def run_study(
    spec: StudySpec, out: str | Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, evaluate and analyze every run not yet done, then write and return the summary."""
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    timings = _read_timings(out)
    for i, study_run in enumerate(spec.runs, 1):
        run = RunDir(out / "runs" / study_run.label)
        for step, done, do in _steps(study_run, run, spec):
            if done():  # a skipped step keeps the time it took when it ran
                log(f"[{i}/{len(spec.runs)}] {study_run.label}: {step} (done)")
                continue
            log(f"[{i}/{len(spec.runs)}] {study_run.label}: {step}")
            start = time.perf_counter()
            do()
            timings.setdefault(study_run.label, {})[step] = round(time.perf_counter() - start, 1)
            _write_json(out / "timings.json", timings)
    summary = summarize(spec, out)
    write_summary(summary, out)
    return summary


# -- summary ---------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _read_timings(out: Path) -> dict[str, dict[str, float]]:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass
class RunResult:
    """What one finished run measured (accuracies in [0, 1]; missing ones are absent)."""

    label: str
    group: str
    overrides: list[str]
    accuracy: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _run_result(study_run: StudyRun, out: Path, timings: dict) -> RunResult:
    run = RunDir(out / "runs" / study_run.label)
    result = RunResult(
        study_run.label,
        study_run.group,
        study_run.overrides,
        seconds=timings.get(run.root.name, {}),
    )
    if run.eval_json.is_file():
        attacks = json.loads(run.eval_json.read_text())["attacks"]
        result.accuracy.update({k: v["accuracy"] for k, v in attacks.items()})
    if run.analysis_json.is_file():
        analysis = json.loads(run.analysis_json.read_text())
        result.accuracy.update({k: analysis[k] for k, _ in PHASE_COLUMNS if k in analysis})
    return result


def _mean_std(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarize(spec: StudySpec, out: str | Path) -> dict[str, Any]:
    """Per-run results and, per method, mean and sample std over its seeds."""
    out = Path(out)
    timings = _read_timings(out)
    results = [_run_result(r, out, timings) for r in spec.runs]
    methods: dict[str, dict[str, dict[str, float]]] = {}
    for group in dict.fromkeys(r.group for r in results if r.group != "ablation"):
        members = [r for r in results if r.group == group]
        keys = dict.fromkeys(k for r in members for k in r.accuracy)
        methods[group] = {
            k: _mean_std([r.accuracy[k] for r in members if k in r.accuracy]) for k in keys
        }
    seconds = sum(sum(t.values()) for t in timings.values())
    return {
        "study": str(spec.path),
        "eval": {"attacks": spec.eval_attacks, "n": spec.eval_n, "analyze_n": spec.analyze_n},
        "methods": methods,
        "runs": [asdict(r) for r in results],
        "total_seconds": round(seconds, 1),
    }


def _cell(stat: dict[str, float] | None) -> str:
    if not stat:
        return "-"
    if stat["n"] > 1:
        return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"
    return f"{100 * stat['mean']:.2f}"


def _row(label: str, cells: list[str], train_seconds: list[float | None]) -> str:
    known = [t for t in train_seconds if t]
    minutes = f"{statistics.fmean(known) / 60:.1f}" if known else "-"
    return f"| {label} | " + " | ".join(cells) + f" | {minutes} |"


def summary_markdown(summary: dict[str, Any]) -> str:
    """Two Markdown tables: methods (mean ± std over seeds) and ablations (one seed each)."""
    columns = ATTACK_COLUMNS + PHASE_COLUMNS
    head = "| | " + " | ".join(label for _, label in columns) + " | train min/run |"
    rule = "|---" * (len(columns) + 2) + "|"
    lines = [head, rule]
    runs = summary["runs"]
    for method, stats in summary["methods"].items():
        n = max((s["n"] for s in stats.values()), default=0)
        minutes = [r["seconds"].get("train") for r in runs if r["group"] == method]
        cells = [_cell(stats.get(k)) for k, _ in columns]
        lines.append(_row(f"{method} ({n} seeds)", cells, minutes))
    for r in runs:
        if r["group"] == "ablation":
            acc = r["accuracy"]
            cells = [f"{100 * acc[k]:.2f}" if k in acc else "-" for k, _ in columns]
            lines.append(_row(r["label"], cells, [r["seconds"].get("train")]))
    return "\n".join(lines) + "\n"


def write_summary(summary: dict[str, Any], out: str | Path) -> None:
    """``study.json``, ``summary.md`` and ``study.png`` in the study folder."""
    from .report.study_plot import plot_study

    out = Path(out)
    _write_json(out / "study.json", summary)
    (out / "summary.md").write_text(summary_markdown(summary))
    plot_study(summary, ATTACK_COLUMNS, PHASE_COLUMNS, out / "study.png")
