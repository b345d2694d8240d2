"""Where a run keeps its files. One folder per run; every command reads and writes it here.

::

    RUN_DIR/config.yaml        resolved configuration (every default written out)
    RUN_DIR/log.csv            one row per epoch: losses, accuracies, learning rate, seconds
    RUN_DIR/tensorboard/       the same scalars for TensorBoard
    RUN_DIR/checkpoints/last.pt, best.pt   full training state (best = highest validation PGD)
    RUN_DIR/eval.json          written by ``phaseguard eval``
    RUN_DIR/analysis.json      written by ``phaseguard analyze`` (phase reliance)
    RUN_DIR/eps_curve.json     cached by ``phaseguard report`` (accuracy against eps)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log_csv(self) -> Path:
        return self.root / "log.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, which: str = "last") -> Path:
        return self.checkpoints / f"{which}.pt"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"

    @property
    def analysis_json(self) -> Path:
        return self.root / "analysis.json"

    @property
    def eps_curve_json(self) -> Path:
        return self.root / "eps_curve.json"

    def has_checkpoint(self) -> bool:
        return self.checkpoint("last").is_file()

    def existing(self) -> list[Path]:
        """The run files and folders above that exist (a new run must not mix with them)."""
        paths = [self.config, self.log_csv, self.tensorboard, self.checkpoints]
        paths += [self.eval_json, self.analysis_json, self.eps_curve_json]
        return [p for p in paths if p.exists()]
