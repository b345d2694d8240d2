"""Checkpoint files: atomic, as readable as the rest of the run folder, a failed write named
after the checkpoint, and files that are not checkpoints named for what they are."""

from __future__ import annotations

import os
import pickle
import re
import stat
import subprocess
import sys
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from phaseguard.checkpoint import RESUME_FIELDS, load_checkpoint, save_checkpoint
from phaseguard.errors import CheckpointError


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


def test_a_write_past_the_file_size_limit_raises_efbig_naming_the_checkpoint(tmp_path):
    """A full disk (here: ulimit -f) is the OSError of the write, naming the checkpoint (not its
    temporary file, not torch's "unexpected pos" RuntimeError); the previous file stays."""
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1}, path)
    before = path.read_bytes()
    code = (
        "import errno, resource, signal, sys, torch\n"
        "from phaseguard.checkpoint import save_checkpoint\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    save_checkpoint({'epoch': 2, 'w': torch.zeros(10000)}, sys.argv[1])\n"
        "except OSError as exc:\n"
        "    assert exc.errno == errno.EFBIG and exc.filename == sys.argv[1], exc\n"
        "    print('EFBIG')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "EFBIG", proc.stderr
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _zip_of_text(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")


@pytest.mark.parametrize(
    "name, write, says",
    [
        (
            "legacy",
            lambda p: torch.save({"w": 1}, p, _use_new_zipfile_serialization=False),
            "legacy (non-zip) format",
        ),
        ("safetensors", lambda p: save_file({"w": torch.zeros(2)}, str(p)), "safetensors file"),
        (
            "plain-pickle",
            lambda p: p.write_bytes(pickle.dumps({"epoch": 1})),
            "plain Python pickle",
        ),
        ("zip-not-torch", _zip_of_text, "not a torch checkpoint"),
    ],
)
def test_files_that_are_not_checkpoints_are_named_for_what_they_are(tmp_path, name, write, says):
    """Other files than checkpoints never reach torch.load: the error says what they are."""
    path = tmp_path / f"{name}.pt"
    write(path)
    with pytest.raises(CheckpointError, match=re.escape(says)) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_resume_needs_every_training_field(tmp_path):
    """``need`` names the fields a caller reads; one that is missing is a one-line error."""
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "config": "{}", "history": []}, path)
    assert load_checkpoint(path)["epoch"] == 1
    with pytest.raises(CheckpointError, match="incomplete checkpoint: it has no meta, model"):
        load_checkpoint(path, need=RESUME_FIELDS)
    save_checkpoint({"epoch": 1, "history": "none"}, path)
    with pytest.raises(CheckpointError, match="its history should be a list"):
        load_checkpoint(path)
