"""matplotlib for the report's figures (headless, an optional dependency) and the
training-curve figure of one or more runs."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..extras import require
from ..files import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@functools.cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the headless Agg backend; MissingExtraError (one line naming
    the ``[report]`` extra) when matplotlib is not installed."""
    matplotlib = require("matplotlib", "report", "the report's figures")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "report", "the report's figures")


def save_figure(fig: Figure, out: Path) -> Path:
    """Write ``fig`` as PNG ``out`` (110 dpi) atomically and close it: a failed write (full
    disk, read-only folder) raises its ``OSError`` naming ``out`` and leaves no torn file."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=110)
    finally:
        pyplot().close(fig)
    try:
        with atomic_write(out, "wb") as fh:
            fh.write(buffer.getvalue())
    except OSError as exc:  # named after the PNG, not its temporary file
        exc.filename, exc.filename2 = str(out), None
        raise
    return out


#: The panels of the training figure: ``log.csv`` column, title.
CURVES = [
    ("train_loss", "training loss"),
    ("val_clean_acc", "validation clean accuracy"),
    ("val_robust_acc", "validation PGD accuracy"),
    ("lr", "learning rate"),
]


def training_figure(histories: dict[str, list[dict[str, float]]]) -> Figure:
    """One panel per curve of :data:`CURVES`, one line per run, ticks at whole epochs only;
    ``histories`` maps run label -> log rows (:func:`~phaseguard.training.logger.read_log`)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES):
        for label, rows in histories.items():
            points = [(r["epoch"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_curves(histories: dict[str, list[dict[str, float]]], out: Path) -> Path:
    """Write :func:`training_figure` of ``histories`` to PNG ``out``."""
    return save_figure(training_figure(histories), out)
