"""``phaseguard report``: a self-contained HTML page (and its PNGs) for one run or several.

Sections: the runs (configuration from ``config.yaml``, environment from ``eval.json``,
:mod:`.summary`), training curves (``log.csv``), the evaluation table (``eval.json``), robust
accuracy against eps (PGD-20 or another evaluation attack, cached in ``eps_curve.json``,
:mod:`.eps_curve`), phase reliance (``analysis.json`` from ``phaseguard analyze``), for DAT runs
what the amplitude mix-up does to a few test images (:mod:`.dat_figure`), and every sanity check
of the evaluations. Each table of numbers says the checkpoint, epoch, n, norm and eps they were
measured with. The PNGs lie next to the HTML file, named after it, and are referenced by
relative paths; every text from a run is HTML-escaped. The page is put together in
:mod:`.page`; the figures need matplotlib (the ``[report]`` extra, :func:`.plots.pyplot`).

Every file of the runs the page shows is read and checked first (:mod:`.records`), and the
page's folder is tried for writing, before any attack runs: a damaged file or a folder that
cannot be written is one error naming it, not a traceback after minutes of attacks. The page
and its PNGs are written atomically (a full disk leaves no torn file).
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..config import load_config
from ..errors import ConfigError, PhaseguardError
from ..files import TMP_SUFFIX, write_text
from ..run_dir import RunDir
from .eps_curve import DEFAULT_ATTACK
from .page import render_page
from .plots import pyplot
from .records import read_run_records


def _check_run_folder(run: RunDir) -> None:
    """PhaseguardError unless ``run`` is a folder with a ``log.csv``."""
    try:
        mode = run.root.stat().st_mode
    except FileNotFoundError:
        raise PhaseguardError(f"{run.root} is not a run folder (it does not exist)") from None
    except OSError as exc:  # a symbolic link loop, a folder it may not enter
        raise PhaseguardError(f"cannot read {run.root}: {exc.strerror}") from None
    if not stat.S_ISDIR(mode):
        raise PhaseguardError(f"{run.root} is not a run folder (not a folder)")
    if not os.path.lexists(run.log_csv):
        raise PhaseguardError(f"{run.root} is not a run folder (no {run.log_csv.name})")


def _check_writable(out: Path) -> None:
    """Raise the ``OSError`` (naming ``out``) that writing the page would give, now: its folder
    is created, and a file is created and removed in it."""
    if out.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    probe = out.with_name(f".{out.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        exc.filename, exc.filename2 = str(out), None
        raise
    probe.unlink()


def write_report(
    run_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    eps_curve: bool = True,
    eps_n: int = 500,
    device: str | torch.device = "cpu",
    dat_images: int = 6,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    eps_attack: str = DEFAULT_ATTACK,
) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (default: ``report.html`` in the first run
    folder) and its PNGs next to it; return the HTML path.

    ``eps_curve``: compute (or reuse from ``eps_curve.json``) the accuracy under the evaluation
    attack ``eps_attack`` (PGD-20 by default) against eps on the first ``eps_n`` test images
    (ConfigError for an unknown attack). ``dat_images``: columns of the DAT figure; ``seed``: of the
    attacks and of the figure's lam and noise. ``log`` receives progress lines.
    Raises PhaseguardError for a folder that is not a run and for a damaged file of a run
    (:mod:`.records`), OSError (naming the file) when a file cannot be read or written.
    """
    runs = [RunDir(Path(p)) for p in run_dirs]
    if not runs:
        raise PhaseguardError("no run folder given")
    for run in runs:
        _check_run_folder(run)
    if eps_curve and eps_n < 1:
        raise ConfigError(f"eps_n must be a positive number of images, got {eps_n}")
    pyplot()  # every report has figures: without matplotlib, say so before any attack runs
    device = torch.device(device)
    configs = [load_config(run.config) for run in runs]
    records = [read_run_records(run) for run in runs]
    out = Path(out) if out else runs[0].root / "report.html"
    _check_writable(out)
    page = render_page(
        runs, records, configs, out, eps_curve, eps_n, device, dat_images, seed, log, eps_attack
    )
    try:
        write_text(out, page)
    except OSError as exc:  # a full disk: named after the page, not its temporary file
        exc.filename, exc.filename2 = str(out), None
        raise
    return out


__all__ = ["write_report"]
