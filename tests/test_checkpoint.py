"""Checkpoint files: atomic, and as readable as the rest of the run folder."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from phaseguard.checkpoint import load_checkpoint, save_checkpoint


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_checkpoint_gets_the_permissions_its_umask_gives(tmp_path, umask, mode):
    path = tmp_path / "ckpt" / "last.pt"
    previous = os.umask(umask)
    try:
        save_checkpoint({"epoch": 1, "w": torch.arange(3.0)}, path)
        first = _mode(path)
        save_checkpoint({"epoch": 2, "w": torch.arange(3.0)}, path)  # replaces the file
    finally:
        os.umask(previous)
    assert first == mode and _mode(path) == mode
    assert load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception, match="pickle"):
        save_checkpoint({"epoch": 2, "bad": lambda: None}, path)  # torch.save cannot pickle it
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_runs_checkpoints_are_as_readable_as_its_config(tiny_run):
    for which in ("last", "best"):
        assert _mode(tiny_run / "checkpoints" / f"{which}.pt") == _mode(tiny_run / "config.yaml")
