"""Training logs: log.csv's flat columns, TensorBoard's grouped tags (from a real tiny run),
evaluation results in TensorBoard, and training without TensorBoard installed."""

from __future__ import annotations

import csv
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from phaseguard.run_dir import RunDir
from phaseguard.training import train
from phaseguard.training.logger import log_evaluation, read_log, tensorboard_tag
from tests.conftest import tiny_config

#: log.csv's header for PGD-AT: other code (the report, the study, users' scripts) reads these.
PGD_AT_COLUMNS = [
    "epoch",
    "train_acc_adv",
    "train_loss",
    "lr",
    "seconds",
    "images_per_s",
    "val_clean_acc",
    "val_robust_acc",
]


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar TensorBoard reads in ``log_dir``: tag -> [(step, value)]."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tags_are_grouped():
    assert tensorboard_tag("train_loss") == "train/loss"
    assert tensorboard_tag("train_acc_adv") == "train/acc_adv"
    assert tensorboard_tag("train_generator_loss") == "train/generator_loss"
    assert tensorboard_tag("val_clean_acc") == "val/clean_acc"
    assert tensorboard_tag("val_robust_acc") == "val/robust_acc"
    assert tensorboard_tag("images_per_s") == "speed/images_per_s"
    assert tensorboard_tag("seconds") == "speed/seconds"
    assert tensorboard_tag("lr") == "lr"


def test_tensorboard_has_grouped_tags_and_log_csv_its_flat_columns(tiny_run):
    run = RunDir(tiny_run)
    with run.log_csv.open(newline="") as fh:
        assert next(csv.reader(fh)) == PGD_AT_COLUMNS
    rows = read_log(run.log_csv)
    logged = scalars(run.tensorboard)
    assert sorted(logged) == sorted(
        [
            "train/acc_adv",
            "train/loss",
            "lr",
            "speed/seconds",
            "speed/images_per_s",
            "val/clean_acc",
            "val/robust_acc",
        ]
    )
    for column in PGD_AT_COLUMNS[1:]:
        expected = [(int(r["epoch"]), r[column]) for r in rows]
        steps, values = zip(*logged[tensorboard_tag(column)])
        assert list(steps) == [e for e, _ in expected] == [1, 2, 3]
        assert list(values) == pytest.approx([v for _, v in expected], rel=1e-6)


def test_log_evaluation_writes_eval_tags_into_the_run(tmp_path):
    assert log_evaluation(tmp_path, {"natural": 0.75, "pgd20": 0.5}, step=3)
    assert scalars(RunDir(tmp_path).tensorboard) == {
        "eval/natural": [(3, 0.75)],
        "eval/pgd20": [(3, 0.5)],
    }


def test_without_tensorboard_training_writes_log_csv_and_one_note(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    out = tmp_path / "run"
    train(tiny_config("train.epochs=2", "data.train_size=128"), out)
    err = capsys.readouterr().err.splitlines()
    notes = [line for line in err if line.startswith("phaseguard:")]
    assert notes == [
        "phaseguard: note: TensorBoard logging needs tensorboard: "
        "pip install 'phaseguard[tensorboard]' (TensorBoard logs skipped)"
    ]
    assert [r["epoch"] for r in read_log(RunDir(out).log_csv)] == [1.0, 2.0]
    assert not RunDir(out).tensorboard.exists()
    assert not log_evaluation(out, {"natural": 0.5}, step=2)
    assert "phaseguard[tensorboard]" in capsys.readouterr().err
    assert not RunDir(out).tensorboard.exists()
