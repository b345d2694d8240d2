"""The files of a run that the report reads, read strictly and before anything is computed:
``log.csv``, ``eval.json`` and ``analysis.json``.

A file that is missing is None (the page says how to produce it; a run folder without
``log.csv`` is refused by :func:`phaseguard.report.write_report`). A file that is there but
damaged (not text, not JSON, JSON of another shape, a field of the wrong type, a log row with a
non-number or a missing cell) is a :class:`~phaseguard.errors.PhaseguardError` naming the file
and the problem, never a page built on part of it. A file that cannot be read at all (a folder
in its place, no permission) raises the ``OSError`` of the read, which names it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PhaseguardError
from ..files import read_json
from ..run_dir import RunDir
from ..training.logger import read_log

#: A check of one field: (does the value pass, what it should be).
Check = tuple[Callable[[Any], bool], str]


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _result(value: object) -> bool:
    """One attack's result in ``eval.json``: a mapping whose accuracy, if any, is a number."""
    return isinstance(value, dict) and (
        value.get("accuracy") is None or _number(value.get("accuracy"))
    )


def _checks(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(c, dict) for c in value)


def _results(value: object) -> bool:
    return isinstance(value, dict) and all(_result(v) for v in value.values())


def _accuracy(value: object) -> bool:
    return value is None or _number(value)


#: The fields of ``eval.json`` the report shows (:class:`phaseguard.evaluation.EvalReport`).
EVAL_FIELDS: dict[str, Check] = {
    "attacks": (_results, "attack names mapped to results"),
    "eps": (_number, "a number"),
    "norm": (lambda v: isinstance(v, str), "a norm name"),
    "n": (_whole, "a number of images"),
    "worst_case": (lambda v: v is None or _result(v), "a result or null"),
    "sanity": (_checks, "a list of checks"),
    "info": (lambda v: isinstance(v, dict), "a mapping"),
}
#: The fields of ``analysis.json`` the report shows (:class:`phaseguard.analyze.PhaseReliance`).
ANALYSIS_FIELDS: dict[str, Check] = {
    **{
        key: (_accuracy, "a number or null")
        for key in (
            "clean",
            "robust",
            "foreign_amplitude",
            "foreign_phase",
            "foreign_amplitude_robust",
            "foreign_phase_robust",
            "phase_reliance",
        )
    },
    "eps": (_number, "a number"),
    "norm": (lambda v: isinstance(v, str), "a norm name"),
    "n": (_whole, "a number of images"),
    "attack": (lambda v: isinstance(v, str), "an attack name"),
    "info": (lambda v: isinstance(v, dict), "a mapping"),
}


def _short(value: object) -> str:
    """A value in a few words for an error message."""
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_record(
    path: Path, what: str, fields: dict[str, Check], required: tuple[str, ...]
) -> dict[str, Any] | None:
    """The JSON object in ``path`` (``what``: what it holds, for messages), each of ``fields``
    it has checked and ``required`` ones present; None when there is no such file."""
    if not os.path.lexists(path):
        return None
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise PhaseguardError(
            f"{path} is not a valid {what}: it holds {_short(data)}, not a mapping"
        )
    missing = [key for key in required if key not in data]
    if missing:
        raise PhaseguardError(f"{path} is not a valid {what}: it has no {', '.join(missing)}")
    for key, (ok, should) in fields.items():
        if key in data and not ok(data[key]):
            raise PhaseguardError(
                f"{path} is not a valid {what}: its {key} should be {should}, "
                f"not {_short(data[key])}"
            )
    return data


def read_evaluation(path: Path) -> dict[str, Any] | None:
    """A run's ``eval.json`` (what ``phaseguard eval`` wrote), None when there is none."""
    return read_record(path, "evaluation (eval.json)", EVAL_FIELDS, ("attacks",))


def read_analysis(path: Path) -> dict[str, Any] | None:
    """A run's ``analysis.json`` (what ``phaseguard analyze`` wrote), None when there is none."""
    return read_record(path, "phase-reliance analysis (analysis.json)", ANALYSIS_FIELDS, ("clean",))


@dataclass
class RunRecords:
    """What the report shows of one run, read up front: its log rows, ``eval.json`` and
    ``analysis.json`` (None where missing)."""

    log: list[dict[str, float]]
    evaluation: dict[str, Any] | None
    analysis: dict[str, Any] | None


def read_run_records(run: RunDir) -> RunRecords:
    """Read and check every file of ``run`` the report shows (see the module's docstring)."""
    return RunRecords(
        read_log(run.log_csv), read_evaluation(run.eval_json), read_analysis(run.analysis_json)
    )
