"""The figure of a study: accuracies per method (mean ± std over seeds), phase reliance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .plots import pyplot, save_figure


def _bars(ax, groups: dict[str, dict[str, dict]], columns: list[tuple[str, str]], title: str):
    """Grouped bars: one group per column, one bar per entry of ``groups`` (label -> stats)."""
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(columns))
    for i, (label, stats) in enumerate(groups.items()):
        mean = [100 * stats[k]["mean"] if k in stats else np.nan for k, _ in columns]
        std = [100 * stats[k]["std"] if k in stats else 0.0 for k, _ in columns]
        ax.bar(
            x + (i - (len(groups) - 1) / 2) * width, mean, width, yerr=std, label=label, capsize=2
        )
    ax.set_xticks(x, [label for _, label in columns], fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def plot_study(
    summary: dict[str, Any],
    attack_columns: list[tuple[str, str]],
    phase_columns: list[tuple[str, str]],
    out: Path,
) -> Path:
    """Write the study figure to ``out`` (PNG) and return the path."""
    methods = summary["methods"]
    ablations = {
        r["label"]: {k: {"mean": v, "std": 0.0} for k, v in r["accuracy"].items()}
        for r in summary["runs"]
        if r["group"] == "ablation"
    }
    panels = [(methods, attack_columns, "accuracy, mean ± std over seeds")]
    panels.append((methods, phase_columns, "phase reliance (hybrid images)"))
    if ablations:
        panels.append((ablations, attack_columns, "DAT ablations (one seed)"))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.6))
    for ax, (groups, columns, title) in zip(np.atleast_1d(axes), panels):
        _bars(ax, groups, columns, title)
    fig.tight_layout()
    save_figure(fig, out)
    return out
