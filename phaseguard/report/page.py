"""The report's HTML page, section by section: training curves, evaluation table, robust
accuracy against eps, phase reliance and the DAT figure. Sections that need a plot write its PNG
next to the page; every text from a run is HTML-escaped.
"""

from __future__ import annotations

import functools
import html
import json
from collections.abc import Callable
from pathlib import Path

import torch

from ..attacks import eval_attack
from ..config import Config
from ..data import load_dataset
from ..errors import ConfigError
from ..methods.dat import DAT
from ..run_dir import RunDir
from ..training.logger import read_log
from .dat_figure import dat_views, plot_dat_views
from .eps_curve import EPS_MULTIPLES, plot_eps_curves, run_eps_curve
from .plots import plot_training_curves

#: ``analysis.json`` fields shown in the phase-reliance table: key, header, is an accuracy.
PHASE_COLUMNS = [
    ("clean", "clean", True),
    ("robust", "robust", True),
    ("foreign_amplitude", "foreign amplitude", True),
    ("foreign_phase", "foreign phase", True),
    ("foreign_amplitude_robust", "foreign amplitude, robust", True),
    ("foreign_phase_robust", "foreign phase, robust", True),
    ("phase_reliance", "phase reliance", False),
    ("n", "n", False),
    ("eps", "eps", False),
]

_e = html.escape


def _eps_howto(attack: str) -> str:
    """How to get the eps curve of evaluation attack ``attack``."""
    return (
        "<p><code>phaseguard report RUN_DIR ... [--eps-n N] [--eps-attack NAME]</code> without "
        f"<code>--no-eps-curve</code> computes it: {_e(eval_attack(attack).label)} at "
        f"{', '.join(f'{m:g}' for m in EPS_MULTIPLES)} x each run's training eps on the first N "
        "test images (default 500), cached in <code>RUN_DIR/eps_curve.json</code>.</p>"
    )


def _labels(runs: list[RunDir]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name."""
    names = [r.root.name for r in runs]
    return [r.root.name if names.count(r.root.name) == 1 else str(r.root) for r in runs]


def _img(png: Path, alt: str) -> str:
    """An <img> of ``png``, by its file name (it lies next to the page)."""
    return f'<img src="{_e(png.name)}" alt="{_e(alt)}" style="max-width:100%">'


def _eval_rows(runs: list[RunDir], labels: list[str]) -> str:
    """The evaluation table from each run's ``eval.json``, failed sanity checks as warnings."""
    evals = {
        label: json.loads(r.eval_json.read_text())
        for r, label in zip(runs, labels)
        if r.eval_json.is_file()
    }
    if not evals:
        return "<p>No evaluation yet: run <code>phaseguard eval RUN_DIR</code>.</p>"
    attacks = list(dict.fromkeys(a for e in evals.values() for a in e["attacks"]))
    head = "".join(f"<th>{_e(a)}</th>" for a in [*attacks, "worst case"])
    body = []
    for label, e in evals.items():
        cells = [e["attacks"].get(a, {}).get("accuracy") for a in attacks]
        cells.append((e.get("worst_case") or {}).get("accuracy"))
        tds = "".join("<td>-</td>" if c is None else f"<td>{100 * c:.2f}%</td>" for c in cells)
        body.append(f"<tr><th>{_e(label)}</th>{tds}</tr>")
        warnings = [s for s in e.get("sanity", []) if not s["passed"]]
        for s in warnings:
            body.append(
                f'<tr><td colspan="{len(attacks) + 2}" class="warn">warning ({_e(label)}):'
                f" {_e(s['name'])}: {_e(s['detail'])}</td></tr>"
            )
    return f"<table><tr><th>run</th>{head}</tr>{''.join(body)}</table>"


def _eps_section(
    runs: list[RunDir],
    labels: list[str],
    configs: list[Config],
    out: Path,
    eps_n: int,
    seed: int,
    device: torch.device,
    dataset: Callable,
    log: Callable[[str], None] | None,
    attack: str,
) -> str:
    """Robust accuracy against eps under evaluation attack ``attack``: each run's cached or
    computed curve, its plot and table."""
    notes, curves, rows = [], {}, []
    for run, label, cfg in zip(runs, labels, configs):
        if not run.has_checkpoint():
            notes.append(f"<p>{_e(label)}: no checkpoint, no curve.</p>")
            continue
        data = dataset(cfg.data.name, cfg.data.root)
        c = run_eps_curve(
            run.root, eps_n, seed=seed, device=device, data=data, log=log, attack=attack
        )
        curves[label] = c
        cells = "".join(f"<td>{100 * a:.1f}%</td>" for a in c.accuracy)
        rows.append(
            f"<tr><th>{_e(label)}</th><td>{_e(c.norm)} {cfg.attack.eps:g}</td><td>{c.n}</td>"
            f"<td>{_e(c.checkpoint)} (epoch {c.epoch})</td>{cells}</tr>"
        )
    if not curves:
        return "".join(notes) + _eps_howto(attack)
    png = plot_eps_curves(curves, out.with_name(out.stem + "_eps.png"))
    head = "".join(f"<th>{m:g} eps</th>" for m in EPS_MULTIPLES)
    return (
        f"{_img(png, 'robust accuracy against eps')}"
        f"<p>{_e(eval_attack(attack).label)} (seed {seed}) on the first n test "
        "images, eval mode, main BN branch, at multiples of each run's training eps; cached in "
        "<code>RUN_DIR/eps_curve.json</code> and recomputed when a setting or the checkpoint "
        "changes.</p>"
        f"<table><tr><th>run</th><th>training eps</th><th>n</th><th>checkpoint</th>{head}</tr>"
        f"{''.join(rows)}</table>{''.join(notes)}"
    )


def _number(value: object, accuracy: bool) -> str:
    """A table cell's text: a percentage, another number, or "-" for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{100 * value:.2f}%" if accuracy else f"{value:.4g}"


def _phase_section(runs: list[RunDir], labels: list[str]) -> str:
    """The phase-reliance table from each run's ``analysis.json``, or how to produce it."""
    rows, missing = [], []
    for run, label in zip(runs, labels):
        try:
            analysis = json.loads(run.analysis_json.read_text())
        except FileNotFoundError:
            missing.append((label, run))
            continue
        except (OSError, ValueError) as exc:
            rows.append(
                f'<tr><th>{_e(label)}</th><td colspan="{len(PHASE_COLUMNS)}" '
                f'class="warn">unreadable analysis.json ({_e(str(exc))})</td></tr>'
            )
            continue
        if not isinstance(analysis, dict):
            analysis = {}
        cells = "".join(
            f"<td>{_number(analysis.get(key), accuracy)}</td>" for key, _, accuracy in PHASE_COLUMNS
        )
        rows.append(f"<tr><th>{_e(label)}</th>{cells}</tr>")
    parts = []
    if rows:
        head = "".join(f"<th>{_e(title)}</th>" for _, title, _ in PHASE_COLUMNS)
        parts.append(
            f"<table><tr><th>run</th>{head}</tr>{''.join(rows)}</table>"
            "<p>Accuracy on cross-class hybrids: <em>foreign amplitude</em> keeps the image's "
            "phase and takes another class's amplitude (scored by the phase's label), "
            "<em>foreign phase</em> the reverse (scored by the amplitude's label); phase "
            "reliance = foreign amplitude / clean.</p>"
        )
    for label, run in missing:
        parts.append(
            f"<p>{_e(label)}: no <code>analysis.json</code>; "
            f"<code>phaseguard analyze {_e(str(run.root))}</code> produces it.</p>"
        )
    return "".join(parts)


def _dat_section(
    runs: list[RunDir],
    labels: list[str],
    configs: list[Config],
    out: Path,
    device: torch.device,
    dataset: Callable,
    images: int,
    seed: int,
) -> str:
    """For each DAT run, the figure of its amplitude mix-up on ``images`` test images."""
    parts = []
    for i, (run, label, cfg) in enumerate(zip(runs, labels, configs)):
        if cfg.method["name"] != DAT.name:
            continue
        parts.append(f"<h3>{_e(label)}</h3>")
        if not run.has_checkpoint():
            parts.append("<p>No checkpoint yet.</p>")
            continue
        try:
            d = dat_views(run.root, images, seed, device, dataset(cfg.data.name, cfg.data.root))
        except ConfigError as exc:
            parts.append(f"<p>{_e(str(exc))}</p>")
            continue
        png = plot_dat_views(d, out.with_name(f"{out.stem}_dat{i}.png"))
        channel = "" if d.x.shape[1] == 1 else " Spectra and A_G: channel 0 (red) of the RGB image."
        ball = f"{d.norm} eps {d.eps:g}"
        parts.append(
            f"{_img(png, f'DAT views of {label}')}<p>Last checkpoint (epoch {d.epoch}), first "
            f"{len(d.x)} test images, seed {d.seed}, no crop/flip. Rows: the image x; its "
            "amplitude log(1+|F(x)|), fftshift-ed (DC in the centre); its phase angle(F(x)), "
            "fftshift-ed for display; "
            + (
                "A_G, the generator's amplitude (in (0,1)) from noise and the classifier's "
                "logits on x, on one colour scale spanning the range in its label; "
                if d.generated
                else "A, uniform noise in (0,1) (method.amplitude=random); "
            )
            + "x_hat, the phase of x recombined with the amplitude lam * A_G + (1 - lam) * "
            "|F(x)| (lam under each column); x_hat' = EAEG(x_hat) on the auxiliary BN branch "
            f"({_e(ball)}).{channel}</p>"
        )
    if not parts:
        return "<p>This figure applies to DAT runs (<code>method.name: dat</code>).</p>"
    return "".join(parts)


def render_page(
    runs: list[RunDir],
    configs: list[Config],
    out: Path,
    eps_curve: bool,
    eps_n: int,
    device: torch.device,
    dat_images: int,
    seed: int,
    log: Callable[[str], None] | None,
    eps_attack: str,
) -> str:
    """The HTML page of ``runs`` (with their ``configs``), whose PNGs are written next to
    ``out`` (named after it); arguments as in :func:`phaseguard.report.write_report`."""
    labels = _labels(runs)
    dataset = functools.cache(load_dataset)
    curves = plot_training_curves(
        {label: read_log(r.log_csv) for r, label in zip(runs, labels)},
        out.with_name(out.stem + "_curves.png"),
    )
    if eps_curve:
        eps = _eps_section(
            runs, labels, configs, out, eps_n, seed, device, dataset, log, eps_attack
        )
    else:
        eps = "<p>Skipped (<code>--no-eps-curve</code>).</p>" + _eps_howto(eps_attack)
    dat = _dat_section(runs, labels, configs, out, device, dataset, dat_images, seed)
    title = "phaseguard report: " + ", ".join(labels)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.warn{{color:#a40;text-align:left}}</style></head><body>
<h1>{_e(title)}</h1>
<h2>Training</h2>{_img(curves, "training curves")}
<h2>Evaluation</h2>{_eval_rows(runs, labels)}
<h2>Robust accuracy against eps</h2>{eps}
<h2>Phase reliance</h2>{_phase_section(runs, labels)}
<h2>DAT: amplitude mix-up and its adversarial example</h2>{dat}
</body></html>
"""
