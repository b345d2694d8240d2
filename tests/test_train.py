"""The training loop: run folder, determinism, resume after a kill, NaN stop, checkpoints."""

from __future__ import annotations

import csv
import re

import pytest
import torch

from phaseguard.checkpoint import load_checkpoint, save_checkpoint
from phaseguard.config import load_config
from phaseguard.errors import ConfigError, TrainingError
from phaseguard.models import create_model
from phaseguard.training import Trainer, train
from phaseguard.training.precision import resolve_speed_settings
from tests.conftest import tiny_config


def _weights(run_dir, which="last"):
    return load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_run_folder_holds_config_log_checkpoints(tiny_run):
    # the config with precision and layout resolved for this machine
    net = create_model("smallcnn", 10, 1, width=8)
    resolved, _, _ = resolve_speed_settings(tiny_config(), torch.device("cpu"), net)
    assert load_config(tiny_run / "config.yaml") == resolved
    assert resolved.train.precision in ("bf16", "fp32") and resolved.train.channels_last is False
    with (tiny_run / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for key in ("train_loss", "train_acc_adv", "val_clean_acc", "val_robust_acc", "lr", "seconds"):
        assert all(r[key] != "" for r in rows), key
    assert any((tiny_run / "tensorboard").iterdir())
    last = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    best = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    assert last["epoch"] == 3
    assert best["epoch"] == last["best"]["epoch"]
    assert best["best"]["robust_acc"] == max(float(r["val_robust_acc"]) for r in rows)
    # the loss went down over the run
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])


def _crash_in_epoch_2(cfg, out):
    """Train ``cfg`` into ``out`` and die after epoch 2's training, before its checkpoint."""
    trainer = Trainer(cfg, out)
    calls = {"n": 0}
    real_validate = trainer._validate

    def dying_validate():
        calls["n"] += 1
        if calls["n"] == 2:  # epoch 2 trained but not yet checkpointed: the process dies here
            raise KeyboardInterrupt
        return real_validate()

    trainer._validate = dying_validate
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1


def _assert_same_tensors(a, b):
    """Nested dicts and lists of tensors and numbers, equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same_tensors(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same_tensors(u, v)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_same_seed_same_weights_and_resume_after_a_crash_is_identical(tmp_path, tiny_run):
    """A run that dies during epoch 2 and is resumed ends where an uninterrupted one ends."""
    crashed = tmp_path / "crashed"
    _crash_in_epoch_2(tiny_config(), crashed)
    train(tiny_config(), crashed, resume=True)
    _assert_same_weights(_weights(crashed), _weights(tiny_run))
    with (crashed / "log.csv").open() as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]


def test_dat_resumed_after_a_crash_restores_generator_and_its_optimiser(tmp_path):
    """The trainer checkpoints what a method trains besides the classifier: a resumed DAT run
    ends with the classifier, generator and generator momentum of an uninterrupted one."""
    cfg = tiny_config("method.name=dat", "method.eaeg_steps=1", "train.epochs=2")
    train(cfg, tmp_path / "whole")
    _crash_in_epoch_2(cfg, tmp_path / "crashed")
    train(cfg, tmp_path / "crashed", resume=True)
    whole, resumed = (
        load_checkpoint(tmp_path / r / "checkpoints" / "last.pt") for r in ("whole", "crashed")
    )
    assert set(resumed["method"]) == {"generator", "generator_optimizer"}
    assert resumed["method"]["generator_optimizer"]["state"]  # momentum buffers
    for key in ("model", "optimizer", "method"):
        _assert_same_tensors(resumed[key], whole[key])
    with (tmp_path / "whole" / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:  # what the generator does, per epoch
        assert 0 < float(row["train_ag_mean"]) < 1 and float(row["train_ag_std"]) > 0
        assert float(row["train_ag_effect"]) > 0


def test_a_log_row_lost_between_checkpoint_and_log_write_comes_back(tmp_path):
    """Killed after the checkpoint of epoch 2 was written but before its log row: on resume the
    log is rebuilt from the checkpoint's history, so no epoch is missing or repeated."""
    out = tmp_path / "run"
    train(tiny_config("train.epochs=2"), out)
    log = out / "log.csv"
    with log.open() as fh:
        rows = list(csv.DictReader(fh))
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))  # the epoch-2 row never reached the disk
    train(tiny_config("train.epochs=3"), out, resume=True)
    with log.open() as fh:
        resumed = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in resumed] == [1, 2, 3]
    assert resumed[1]["val_robust_acc"] == rows[1]["val_robust_acc"]


def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_checkpoint(tmp_path):
    out = tmp_path / "nan"
    train(tiny_config("train.epochs=1"), out)
    before = _weights(out)
    diverging = tiny_config("train.epochs=2", "optim.lr=1e30", "schedule.name=piecewise")
    config = (out / "config.yaml").read_text()
    with pytest.raises(TrainingError, match=r"NaN or infinite at epoch 2, step \d+"):
        train(diverging, out, resume=True)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    _assert_same_weights(state["model"], before)
    # the failed resume's settings never reached config.yaml: a plain resume works
    assert (out / "config.yaml").read_text() == config
    train(tiny_config("train.epochs=2"), out, resume=True)
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 2


def test_existing_run_is_not_overwritten(tiny_run, tmp_path):
    with pytest.raises(ConfigError, match="already holds a run .*; continue it with --resume"):
        Trainer(tiny_config(), tiny_run)
    results_only = tmp_path / "evaluated"  # results but no checkpoints: still a run's folder
    results_only.mkdir()
    (results_only / "eval.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"already holds a run \(eval.json\)"):
        Trainer(tiny_config(), results_only)
    assert (results_only / "eval.json").read_text() == "{}"


def test_weights_that_became_nan_stop_before_validation_and_checkpoints(tmp_path):
    """One step per epoch with an absurd learning rate: the step's loss is finite, the weights
    it leaves are not. Nothing is validated (argmax of NaN scores 10%) or saved."""
    out = tmp_path / "blown"
    train(tiny_config("train.epochs=1"), out)
    before = _weights(out)
    blown = tiny_config(
        "train.epochs=2",
        "data.train_size=64",
        "optim.lr=1e38",
        "optim.weight_decay=1e38",
        "schedule.name=piecewise",  # the full learning rate from the first step
    )
    with pytest.raises(TrainingError, match=r"weights became NaN or infinite in epoch 2; the last"):
        train(blown, out, resume=True)
    _assert_same_weights(_weights(out), before)
    fresh = tmp_path / "fresh"
    with pytest.raises(TrainingError, match="no checkpoint had been written yet"):
        train(blown, fresh)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"epoch": 1, "w": torch.arange(4.0)}, path)

    def crash_mid_write(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(4)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


@pytest.mark.parametrize("progress", ["true", "false"])
def test_epoch_line_is_printed_and_no_bar_leaks_into_a_log(tmp_path, capsys, progress):
    """Off a terminal (a log file, a cluster job) there is no progress bar whatever
    ``train.progress`` says, and the per-epoch summary line is always there."""
    train(tiny_config("train.epochs=1", f"train.progress={progress}"), tmp_path / "run")
    out, err = capsys.readouterr()
    assert re.search(r"^epoch 1/1  loss [\d.]+  val clean [\d.]+  val PGD-2 ", out, re.M), out
    assert "it/s" not in err and "\r" not in err
