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

    def truncate_after(self, epoch: int) -> None:
        """Drop rows past ``epoch`` (a resumed run repeats the epochs after its checkpoint)."""
        if not self.csv_path.is_file():
            return
        with self.csv_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            fields = rows[0].keys() if rows else []
        kept = [r for r in rows if int(r["epoch"]) <= epoch]
        with self.csv_path.open("w", newline="") as fh:
            if fields:
                writer = csv.DictWriter(fh, fieldnames=list(fields))
                writer.writeheader()
                writer.writerows(kept)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_log(csv_path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` as floats."""
    with csv_path.open(newline="") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
