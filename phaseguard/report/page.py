"""The report's HTML page, section by section: the runs (configuration and environment),
training curves, evaluation table with its sanity checks, robust accuracy against eps, phase
reliance and the DAT figure. Every table of measurements starts with what they were measured on
(:data:`CONTEXT`: checkpoint, epoch, n, norm, eps). Sections that need a plot write its PNG
next to the page; every text from a run is HTML-escaped. The run's files come read and checked
(:mod:`.records`): a damaged one has stopped the report before this page is built.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..attacks import eval_attack
from ..config import Config
from ..data import load_dataset
from ..errors import ConfigError
from ..evaluation import robustbench_eps
from ..methods.dat import DAT
from ..run_dir import RunDir
from .dat_figure import dat_views, plot_dat_views
from .eps_curve import EPS_MULTIPLES, plot_eps_curves, run_eps_curve
from .plots import plot_training_curves
from .records import RunRecords
from .summary import checkpoint_name, config_summary, environment

#: ``analysis.json`` fields shown in the phase-reliance table: key, header, is an accuracy.
PHASE_COLUMNS = [
    ("clean", "clean", True),
    ("robust", "robust", True),
    ("foreign_amplitude", "foreign amplitude", True),
    ("foreign_phase", "foreign phase", True),
    ("foreign_amplitude_robust", "foreign amplitude, robust", True),
    ("foreign_phase_robust", "foreign phase, robust", True),
    ("phase_reliance", "phase reliance", False),
]
#: What every table of measurements says first: the checkpoint file (best or last), the epoch
#: it holds, the number of test images and the threat model.
CONTEXT = ("checkpoint", "epoch", "n", "norm", "eps")

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


def _field(value: object) -> str | None:
    """A text or integer field (an epoch, a number of images) as text, None for anything else
    (what a JSON file does not record, or records as null)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    return None


def _header(*titles: str) -> str:
    """A header row: "run", the :data:`CONTEXT` columns, then ``titles``."""
    return "<tr>" + "".join(f"<th>{_e(t)}</th>" for t in ("run", *CONTEXT, *titles)) + "</tr>"


def _context(
    label: str, checkpoint: object, epoch: object, n: object, norm: object, eps: object
) -> str:
    """The start of a table row: the run, then the :data:`CONTEXT` cells ("-" where the file
    does not record one)."""
    values = [_field(v) for v in (checkpoint, epoch, n, norm)]
    values.append(
        robustbench_eps(eps) if isinstance(eps, int | float) and not isinstance(eps, bool) else None
    )
    cells = "".join(f"<td>{'-' if v is None else _e(v)}</td>" for v in values)
    return f"<tr><th>{_e(label)}</th>{cells}"


def _recorded_context(label: str, result: dict[str, Any]) -> str:
    """:func:`_context` from what ``eval.json`` and ``analysis.json`` record: ``n``, ``norm``,
    ``eps`` and, in ``info``, the checkpoint file (``source``) and its ``epoch``."""
    info = result.get("info")
    info = info if isinstance(info, dict) else {}
    return _context(
        label,
        checkpoint_name(info.get("source")),
        info.get("epoch"),
        result.get("n"),
        result.get("norm"),
        result.get("eps"),
    )


def _checks(e: dict[str, Any]) -> list[dict[str, Any]]:
    """The sanity checks an ``eval.json`` records (name, passed, detail)."""
    sanity = e.get("sanity")
    return [c for c in sanity if isinstance(c, dict)] if isinstance(sanity, list) else []


def _eval_section(evals: dict[str, dict[str, Any] | None]) -> str:
    """The evaluation table from each run's ``eval.json`` (label -> its content, None where
    there is none) with how many sanity checks passed; each failed check as a warning under its
    run."""
    found = {label: e for label, e in evals.items() if e is not None}
    if not found:
        return "<p>No evaluation yet: run <code>phaseguard eval RUN_DIR</code>.</p>"
    results = {label: e.get("attacks") or {} for label, e in found.items()}
    attacks = list(dict.fromkeys(a for r in results.values() for a in r))
    rows = []
    for label, e in found.items():
        cells = [(results[label].get(a) or {}).get("accuracy") for a in attacks]
        cells.append((e.get("worst_case") or {}).get("accuracy"))
        tds = "".join(f"<td>{_number(c, True)}</td>" for c in cells)
        checks = _checks(e)
        failed = [c for c in checks if not c.get("passed")]
        if not checks:
            verdict = "<td>-</td>"
        elif failed:
            verdict = f'<td class="warn">{len(failed)} of {len(checks)} failed</td>'
        else:
            verdict = f'<td class="ok">{len(checks)} of {len(checks)} passed</td>'
        rows.append(f"{_recorded_context(label, e)}{tds}{verdict}</tr>")
        rows += [
            f'<tr><td colspan="{len(CONTEXT) + len(attacks) + 3}" class="warn">warning '
            f"({_e(label)}): {_e(str(c.get('name')))}: {_e(str(c.get('detail')))}</td></tr>"
            for c in failed
        ]
    return (
        f"<table>{_header(*attacks, 'worst case', 'sanity checks')}{''.join(rows)}</table>"
        "<p>Accuracy under each attack on the first n test images, eval mode, main BN branch, "
        "fp32; worst case: the images that withstood every attack. Each check is listed under "
        "Sanity checks at the end of the page.</p>"
    )


def _sanity_section(evals: dict[str, dict[str, Any] | None]) -> str:
    """Every sanity check of each run's ``eval.json``, passed and failed, with its detail."""
    rows = []
    for label, e in evals.items():
        checks = _checks(e) if e is not None else []
        for i, c in enumerate(checks):
            head = f'<th rowspan="{len(checks)}">{_e(label)}</th>' if i == 0 else ""
            verdict = (
                '<td class="text ok">passed</td>'
                if c.get("passed")
                else '<td class="warn">FAILED</td>'
            )
            rows.append(
                f'<tr>{head}{verdict}<td class="text">{_e(str(c.get("name")))}</td>'
                f'<td class="text">{_e(str(c.get("detail")))}</td></tr>'
            )
    if not rows:
        return "<p>No sanity checks: they come with <code>phaseguard eval RUN_DIR</code>.</p>"
    return (
        '<table><tr><th>run</th><th class="text">result</th><th class="text">check</th>'
        f'<th class="text">detail</th></tr>{"".join(rows)}</table>'
        "<p>Computed by <code>phaseguard eval</code> from the attacks it ran (the evaluation "
        "table's checkpoint and n): a failed check is a sign of a broken evaluation or of "
        "gradient masking.</p>"
    )


def _unknown_environment(evaluation: dict[str, Any] | None) -> str:
    """Why a run's environment is unknown, from its ``eval.json`` (None: there is none)."""
    if evaluation is None:
        return "unknown: no eval.json"
    return "unknown: eval.json records none"


def _runs_section(
    labels: list[str], configs: list[Config], evals: dict[str, dict[str, Any] | None]
) -> str:
    """A column per run: its configuration summary, then the environment its ``eval.json``
    records (or that it is unknown)."""
    summaries = [config_summary(cfg) for cfg in configs]
    rows = [(key, [s[key] for s in summaries]) for key in summaries[0]]
    envs = {label: environment(e) for label, e in evals.items()}
    keys = list(dict.fromkeys(k for env in envs.values() if env for k in env))
    unknown = {label: _unknown_environment(e) for label, e in evals.items()}
    if keys:
        rows += [
            (f"environment: {k}", [(envs[label] or {}).get(k, unknown[label]) for label in labels])
            for k in keys
        ]
    else:
        rows.append(("environment", [unknown[label] for label in labels]))
    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    body = "".join(
        f"<tr><th>{_e(key)}</th>"
        + "".join(f'<td class="text">{_e(v)}</td>' for v in values)
        + "</tr>"
        for key, values in rows
    )
    return (
        f'<div class="wide"><table class="runs"><tr><th></th>{head}</tr>{body}</table></div>'
        "<p>From each run's <code>config.yaml</code> (method options with their defaults); the "
        "environment is that of <code>phaseguard eval</code>, as <code>eval.json</code> records "
        "it.</p>"
    )


def _training_section(
    records: list[RunRecords], labels: list[str], configs: list[Config], out: Path
) -> str:
    """The training curves from each run's ``log.csv`` and what their validation measured."""
    logs = [r.log for r in records]
    png = plot_training_curves(dict(zip(labels, logs)), out.with_name(out.stem + "_curves.png"))
    rows = []
    for label, cfg, log in zip(labels, configs, logs):
        epochs = [int(r["epoch"]) for r in log if "epoch" in r]
        span = None  # the epochs logged: "1-5", or "1" after one
        if epochs:
            span = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
        per_class = f"{cfg.data.val_per_class} per class"
        a = cfg.attack
        rows.append(
            f"{_context(label, 'each epoch', span, per_class, a.norm, a.eps)}"
            f"<td>PGD-{cfg.train.val_attack_steps}, step {robustbench_eps(a.step)}</td></tr>"
        )
    return (
        f"{_img(png, 'training curves')}"
        f"<table>{_header('validation attack')}{''.join(rows)}</table>"
        "<p>Training loss: the mean over each epoch's batches. Validation accuracies: measured "
        "after each epoch on n images held out of the training split (not the test images of "
        "the tables below), with the weights the epoch ended with (the averaged ones when "
        "weight averaging is on). The best checkpoint is the epoch of highest validation PGD "
        "accuracy.</p>"
    )


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
        context = _context(
            label, checkpoint_name(c.checkpoint), c.epoch, c.n, c.norm, cfg.attack.eps
        )
        rows.append(f"{context}{cells}</tr>")
    if not curves:
        return "".join(notes) + _eps_howto(attack)
    png = plot_eps_curves(curves, out.with_name(out.stem + "_eps.png"))
    return (
        f"{_img(png, 'robust accuracy against eps')}"
        f"<table>{_header(*(f'{m:g} x eps' for m in EPS_MULTIPLES))}{''.join(rows)}</table>"
        f"<p>{_e(eval_attack(attack).label)} (seed {seed}) on the first n test images, eval "
        "mode, main BN branch, fp32, at multiples of each run's training eps (the eps column). "
        "At 0 x eps it is the clean accuracy on those n images: the evaluation table's natural "
        "accuracy where n and the checkpoint are the same. Cached in "
        "<code>RUN_DIR/eps_curve.json</code> and recomputed when a setting or the checkpoint "
        f"changes.</p>{''.join(notes)}"
    )


def _number(value: object, accuracy: bool) -> str:
    """A table cell's text: a percentage, another number, or "-" for anything else (NaN, an
    accuracy of no images, included)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "-"
    return f"{100 * value:.2f}%" if accuracy else f"{value:.4g}"


def _phase_section(runs: list[RunDir], records: list[RunRecords], labels: list[str]) -> str:
    """The phase-reliance table from each run's ``analysis.json``, or how to produce it."""
    rows, missing = [], []
    for run, record, label in zip(runs, records, labels):
        analysis = record.analysis
        if analysis is None:
            missing.append((label, run))
            continue
        attack = analysis.get("attack")
        cells = "".join(
            f"<td>{_number(analysis.get(key), accuracy)}</td>" for key, _, accuracy in PHASE_COLUMNS
        )
        rows.append(
            f"{_recorded_context(label, analysis)}"
            f"<td>{_e(attack) if isinstance(attack, str) else '-'}</td>{cells}</tr>"
        )
    parts = []
    if rows:
        head = _header("attack", *(title for _, title, _ in PHASE_COLUMNS))
        parts.append(
            f"<table>{head}{''.join(rows)}</table>"
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


def _fixed(value: float | None) -> str:
    """A log value with 4 decimals, "-" where the row has none."""
    return "-" if value is None else f"{value:.4f}"


def _distractor_table(log: list[dict[str, float]], label: str, cfg: Config) -> str:
    """Per training epoch, what A_G did (log.csv's ``train_ag_*``); empty without them."""
    rows = [r for r in log if "train_ag_effect" in r]
    if not rows:
        return ""
    a, n = cfg.attack, cfg.data.train_size
    body = "".join(
        f"{_context(label, 'training', int(r['epoch']), n, a.norm, a.eps)}"
        f"<td>{_fixed(r.get('train_ag_mean'))}</td><td>{_fixed(r.get('train_ag_std'))}</td>"
        f"<td>{_fixed(r['train_ag_effect'])}</td><td>{_fixed(r.get('train_ag_travel'))}</td></tr>"
        for r in rows
    )
    output = (
        "the log-amplitude offset"
        if cfg.method.get("generator_output") == "log_scale"
        else "the amplitude map A_G"
    )
    return (
        f"<table>{_header('G mean', 'G std', 'G effect', 'G travel')}{body}</table><p>The "
        f"generator's output G is {output}. Mean, std and effect: means over each epoch's "
        "training batches (n: training images; docs/dat.md sections 3 and 13). Effect: the "
        "share of x_hat's change from x that G's variation causes, against its batch-mean map; "
        "near 0, a constant map would give the same x_hat. Travel: the mean absolute change of "
        "G over the epoch on the epoch's first inputs; near 0, the generator does not learn.</p>"
    )


def _dat_section(
    runs: list[RunDir],
    records: list[RunRecords],
    labels: list[str],
    configs: list[Config],
    out: Path,
    device: torch.device,
    dataset: Callable,
    images: int,
    seed: int,
) -> str:
    """For each DAT run, what its distractor did during training and the figure of its
    amplitude mix-up on ``images`` test images."""
    parts = []
    for i, (run, record, label, cfg) in enumerate(zip(runs, records, labels, configs)):
        if cfg.method["name"] != DAT.name:
            continue
        parts.append(f"<h3>{_e(label)}</h3>{_distractor_table(record.log, label, cfg)}")
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
        ball = f"{d.norm} eps {robustbench_eps(d.eps)}"
        parts.append(
            f"<table>{_header('seed')}"
            f"{_context(label, 'last', d.epoch, len(d.x), d.norm, d.eps)}<td>{d.seed}</td></tr>"
            f"</table>{_img(png, f'DAT views of {label}')}<p>The first n test images, no "
            "crop/flip; eps is the ball of EAEG, x_hat's attack. Rows: the image x; its "
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
    records: list[RunRecords],
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
    """The HTML page of ``runs`` (with their ``records``, :func:`.records.read_run_records`,
    and ``configs``), whose PNGs are written next to ``out`` (named after it); arguments as in
    :func:`phaseguard.report.write_report`."""
    labels = _labels(runs)
    dataset = functools.cache(load_dataset)
    evals = {label: r.evaluation for r, label in zip(records, labels)}
    training = _training_section(records, labels, configs, out)
    if eps_curve:
        eps = _eps_section(
            runs, labels, configs, out, eps_n, seed, device, dataset, log, eps_attack
        )
    else:
        eps = "<p>Skipped (<code>--no-eps-curve</code>).</p>" + _eps_howto(eps_attack)
    dat = _dat_section(runs, records, labels, configs, out, device, dataset, dat_images, seed)
    title = "phaseguard report: " + ", ".join(labels)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
.text,.runs th{{text-align:left}}.runs td{{min-width:14em;max-width:40em}}
.runs th{{white-space:nowrap}}.wide{{overflow-x:auto}}
.ok{{color:#070}}.warn{{color:#a40;text-align:left}}p{{max-width:60em}}</style></head><body>
<h1>{_e(title)}</h1>
<h2>Runs</h2>{_runs_section(labels, configs, evals)}
<h2>Training</h2>{training}
<h2>Evaluation</h2>{_eval_section(evals)}
<h2>Robust accuracy against eps</h2>{eps}
<h2>Phase reliance</h2>{_phase_section(runs, records, labels)}
<h2>DAT: amplitude mix-up and its adversarial example</h2>{dat}
<h2>Sanity checks</h2>{_sanity_section(evals)}
</body></html>
"""
