"""``phaseguard report``: a self-contained HTML page (and its PNGs) for one run or several."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..errors import PhaseguardError
from ..run_dir import RunDir
from ..train.logger import read_log
from .plots import plot_training_curves


def _eval_rows(runs: list[RunDir]) -> str:
    evals = {
        r.root.name: json.loads(r.eval_json.read_text()) for r in runs if r.eval_json.is_file()
    }
    if not evals:
        return "<p>No evaluation yet: run <code>phaseguard eval RUN_DIR</code>.</p>"
    attacks = list(dict.fromkeys(a for e in evals.values() for a in e["attacks"]))
    head = "".join(f"<th>{html.escape(a)}</th>" for a in [*attacks, "worst case"])
    body = []
    for label, e in evals.items():
        cells = [e["attacks"].get(a, {}).get("accuracy") for a in attacks]
        cells.append((e.get("worst_case") or {}).get("accuracy"))
        tds = "".join("<td>-</td>" if c is None else f"<td>{100 * c:.2f}%</td>" for c in cells)
        body.append(f"<tr><th>{html.escape(label)}</th>{tds}</tr>")
        warnings = [s for s in e.get("sanity", []) if not s["passed"]]
        for s in warnings:
            body.append(
                f'<tr><td colspan="{len(attacks) + 2}" class="warn">warning ({html.escape(label)}):'
                f" {html.escape(s['name'])}: {html.escape(s['detail'])}</td></tr>"
            )
    return f"<table><tr><th>run</th>{head}</tr>{''.join(body)}</table>"


def write_report(run_dirs: list[Path], out: Path | None = None) -> Path:
    """Write ``report.html`` (default: in the first run folder) with curves and eval tables."""
    runs = [RunDir(p) for p in run_dirs]
    for run in runs:
        if not run.log_csv.is_file():
            raise PhaseguardError(f"{run.root} is not a run folder (no {run.log_csv.name})")
    out = out or runs[0].root / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    curves = plot_training_curves(
        {r.root.name: read_log(r.log_csv) for r in runs}, out.with_name(out.stem + "_curves.png")
    )
    title = "phaseguard report: " + ", ".join(r.root.name for r in runs)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.warn{{color:#a40;text-align:left}}</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Training</h2><img src="{curves.name}" alt="training curves" style="max-width:100%">
<h2>Evaluation</h2>{_eval_rows(runs)}
</body></html>
"""
    out.write_text(page)
    return out


__all__ = ["write_report"]
