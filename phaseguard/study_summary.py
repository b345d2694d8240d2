"""The summary of a study, rebuilt from its run folders: per run the accuracies of its
``eval.json`` and ``analysis.json`` and the seconds of ``timings.json``, per method the mean and
sample standard deviation over its seeds; written as ``study.json``, ``summary.md`` (one column
per evaluation attack of the study, labelled from the attack registry, then the phase-reliance
columns) and ``study.png``.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .attacks import eval_attack
from .extras import MissingExtraError
from .files import read_json, write_json, write_text
from .report.records import read_analysis, read_evaluation
from .run_dir import RunDir

if TYPE_CHECKING:
    from .study import StudyRun, StudySpec

#: (key, label) of the summary's analysis.json columns, after one column per evaluation attack.
PHASE_COLUMNS = [
    ("foreign_amplitude", "foreign amp."),
    ("foreign_phase", "foreign phase"),
    ("foreign_amplitude_robust", "foreign amp. PGD"),
]


#: ``timings.json``'s key of a run's wall-clock spans beside the seconds of its steps:
#: ``{LABEL: {STEP: seconds, ..., "spans": {STEP: [start, end]}}}`` (Unix times; the runs of a
#: study done in parallel overlap).
SPANS = "spans"


def load_timings(out: Path) -> dict[str, dict[str, Any]]:
    """``out/timings.json`` as it is (empty before the first step ran)."""
    path = out / "timings.json"
    return read_json(path, "study timings file") if path.is_file() else {}


def read_timings(out: Path) -> dict[str, dict[str, float]]:
    """The seconds per step of each run (``out/timings.json`` without the spans)."""
    return {
        label: {step: s for step, s in steps.items() if step != SPANS}
        for label, steps in load_timings(out).items()
    }


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
    evaluation, analysis = read_evaluation(run.eval_json), read_analysis(run.analysis_json)
    if evaluation is not None:
        result.accuracy.update({k: v["accuracy"] for k, v in evaluation["attacks"].items()})
    if analysis is not None:
        result.accuracy.update({k: analysis[k] for k, _ in PHASE_COLUMNS if k in analysis})
    return result


def _mean_std(values: list[float]) -> dict[str, float]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarize(spec: StudySpec, out: str | Path) -> dict[str, Any]:
    """Per-run results and, per method, mean and sample std over its seeds."""
    out = Path(out)
    timings = read_timings(out)
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


def attack_columns(attacks: list[str]) -> list[tuple[str, str]]:
    """(key, label) of the summary's columns of evaluation ``attacks``, labels from the registry."""
    return [(name, eval_attack(name).label) for name in attacks]


def summary_markdown(summary: dict[str, Any]) -> str:
    """Two Markdown tables: methods (mean ± std over seeds) and ablations (one seed each); one
    column per evaluation attack of the study, then the phase-reliance columns."""
    columns = attack_columns(summary["eval"]["attacks"]) + PHASE_COLUMNS
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
    """``study.json``, ``summary.md`` and ``study.png`` in the study folder; without the
    ``[report]`` extra (matplotlib) the figure is left out with a note on stderr."""
    from .report.study_plot import plot_study

    out = Path(out)
    write_json(out / "study.json", summary)
    write_text(out / "summary.md", summary_markdown(summary))
    columns = attack_columns(summary["eval"]["attacks"])
    try:
        plot_study(summary, columns, PHASE_COLUMNS, out / "study.png")
    except MissingExtraError as exc:
        print(f"phaseguard: note: no study.png: {exc}", file=sys.stderr)
