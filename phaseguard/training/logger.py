"""Per-epoch metrics to a CSV file and to TensorBoard (only the main rank writes)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends one row per epoch to ``csv_path``; mirrors the scalars to TensorBoard."""

    def __init__(self, csv_path: Path, tensorboard_dir: Path | None = None) -> None:
        self.csv_path = csv_path
        self._writer = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(tensorboard_dir))

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
                    self._writer.add_scalar(key, value, epoch)
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
