"""Per-epoch metrics to a CSV file and to TensorBoard (only the main rank writes).

``log.csv`` keeps flat column names (``train_loss``, ``val_robust_acc``, ``lr``, ...); TensorBoard
gets the same scalars under grouped tags (:func:`tensorboard_tag`: ``train/loss``,
``val/robust_acc``, ``lr``, ``speed/images_per_s``), and :func:`log_evaluation` adds a run's
evaluation results as ``eval/<attack>``. TensorBoard is an optional dependency (the
``[tensorboard]`` extra): without it the CSV is still written and one note line says why there
are no TensorBoard logs.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PhaseguardError
from ..extras import require
from ..run_dir import RunDir

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

#: log.csv column prefixes that become TensorBoard groups (``train_loss`` -> ``train/loss``).
TAG_GROUPS = ("train", "val")
#: log.csv columns about throughput, grouped under ``speed/``.
SPEED_COLUMNS = ("seconds", "images_per_s")


def tensorboard_tag(column: str) -> str:
    """The TensorBoard tag of a ``log.csv`` column: ``train_acc_adv`` -> ``train/acc_adv``,
    ``val_clean_acc`` -> ``val/clean_acc``, ``images_per_s`` -> ``speed/images_per_s``; others
    (``lr``) unchanged."""
    group, _, name = column.partition("_")
    if group in TAG_GROUPS and name:
        return f"{group}/{name}"
    if column in SPEED_COLUMNS:
        return f"speed/{column}"
    return column


def tensorboard_writer(log_dir: Path) -> SummaryWriter | None:
    """A ``SummaryWriter`` on ``log_dir``, or None (after one note line on stderr) when
    TensorBoard is not installed."""
    try:
        require("tensorboard", "tensorboard", "TensorBoard logging")
    except PhaseguardError as exc:
        print(f"phaseguard: note: {exc} (TensorBoard logs skipped)", file=sys.stderr, flush=True)
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(log_dir))


def log_evaluation(run_dir: str | Path, results: dict[str, float], step: int) -> bool:
    """Write evaluation results (attack name -> accuracy in [0, 1], e.g. ``{"pgd20": 0.52}``)
    into the run's TensorBoard folder as ``eval/<name>`` at ``step`` (the evaluated epoch);
    return False, after one note line, when TensorBoard is not installed."""
    writer = tensorboard_writer(RunDir(Path(run_dir)).tensorboard)
    if writer is None:
        return False
    for name, value in results.items():
        writer.add_scalar(f"eval/{name}", value, step)
    writer.close()
    return True


class RunLogger:
    """Appends one row per epoch to ``csv_path``; mirrors the scalars to TensorBoard under
    grouped tags (:func:`tensorboard_tag`) when ``tensorboard_dir`` is given and TensorBoard is
    installed."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path | None = None) -> None:
        self.csv_path = csv_path
        self._writer = None if tensorboard_dir is None else tensorboard_writer(tensorboard_dir)

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        row = {"epoch": epoch, **row}
        exists = self.csv_path.is_file() and self.csv_path.stat().st_size > 0
        fields = list(row)
        if exists:
            with self.csv_path.open(newline="") as fh:
                header = next(csv.reader(fh), None)
            fields = header or fields
        with self.csv_path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            if not exists:
                writer.writeheader()
            writer.writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float):
                    self._writer.add_scalar(tensorboard_tag(key), value, epoch)
            self._writer.flush()

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the CSV as the checkpoint's ``history`` (one row per finished epoch).

        A resumed run's log then holds exactly the epochs its checkpoint holds: rows of epochs
        after the checkpoint go, and a row lost to a kill between the checkpoint and the log
        write comes back. Written atomically (temporary file, rename).
        """
        if not history and not self.csv_path.is_file():
            return
        fields = list(dict.fromkeys(k for row in history for k in row))
        tmp = self.csv_path.with_name(self.csv_path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            if history:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows({**row, "epoch": int(row["epoch"])} for row in history)
        tmp.replace(self.csv_path)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_log(csv_path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` as floats."""
    with csv_path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
