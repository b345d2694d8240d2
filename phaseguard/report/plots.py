"""Training-curve figures for one or more runs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = [
    ("train_loss", "training loss"),
    ("val_clean_acc", "validation clean accuracy"),
    ("val_robust_acc", "validation PGD accuracy"),
    ("lr", "learning rate"),
]


def plot_training_curves(histories: dict[str, list[dict[str, float]]], out: Path) -> Path:
    """One panel per curve, one line per run; ``histories`` maps run label -> log rows."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, title) in zip(axes, CURVES):
        for label, rows in histories.items():
            points = [(r["epoch"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
