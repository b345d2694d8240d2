"""matplotlib for the report's figures (headless, an optional dependency) and the
training-curve figure of one or more runs."""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..extras import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@functools.cache
def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the headless Agg backend; MissingExtraError (one line naming
    the ``[report]`` extra) when matplotlib is not installed."""
    matplotlib = require("matplotlib", "report", "the report's figures")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", "report", "the report's figures")


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
    fig = training_figure(histories)
    fig.savefig(out, dpi=110)
    pyplot().close(fig)
    return out
