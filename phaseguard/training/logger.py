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
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PhaseguardError
from ..extras import require
from ..files import atomic_write
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
    """Keeps ``csv_path`` at one row per finished epoch, rewritten atomically after each epoch
    (a kill never leaves a torn row); mirrors the scalars to TensorBoard under grouped tags
    (:func:`tensorboard_tag`) when ``tensorboard_dir`` is given and TensorBoard is installed."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path | None = None) -> None:
        self.csv_path = csv_path
        self._rows: list[dict[str, Any]] = []
        self._writer = None if tensorboard_dir is None else tensorboard_writer(tensorboard_dir)

    def _write(self) -> None:
        fields = list(dict.fromkeys(k for row in self._rows for k in row))
        with atomic_write(self.csv_path) as fh:
            if self._rows:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                writer.writerows(self._rows)

    def log(self, epoch: int, row: dict[str, Any]) -> None:
        self._rows.append({"epoch": epoch, **row})
        self._write()
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(tensorboard_tag(key), value, epoch)
            self._writer.flush()

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Start from the checkpoint's ``history`` (one row per finished epoch).

        A resumed run's log then holds exactly the epochs its checkpoint holds: rows of epochs
        after the checkpoint go, and a row lost to a kill between the checkpoint and the log
        write comes back.
        """
        self._rows = [{**row, "epoch": int(row["epoch"])} for row in history]
        if self._rows or self.csv_path.is_file():
            self._write()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_log(path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` as floats (empty cells left out). A header without
    ``epoch``, a row with more or fewer cells than the header (a truncated row), a cell that is
    not a number or a file that is not CSV text is a PhaseguardError naming the file and the
    line."""
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                return []
            if "epoch" not in header or len(set(header)) != len(header) or "" in header:
                raise PhaseguardError(
                    f"{path} is not a training log: its header {','.join(header)[:80]!r} "
                    "should name each column once, epoch among them"
                )
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(header):
                    raise PhaseguardError(
                        f"{path} line {line} has {len(row)} cells where the header has "
                        f"{len(header)} (a truncated or damaged row)"
                    )
                values = {}
                for name, cell in zip(header, row):
                    if cell == "":
                        continue
                    try:
                        values[name] = float(cell)
                    except ValueError:
                        raise PhaseguardError(
                            f"{path} line {line}: {name} is {cell[:40]!r}, not a number"
                        ) from None
                if "epoch" not in values or not math.isfinite(values["epoch"]):
                    raise PhaseguardError(f"{path} line {line} has no epoch")
                rows.append(values)
    except UnicodeDecodeError:
        raise PhaseguardError(f"{path} is not a training log (not text)") from None
    except csv.Error as exc:
        raise PhaseguardError(
            f"{path} is not a training log (line {reader.line_num}: {exc})"
        ) from None
    return rows
