"""Hostile files and failing file systems: every bad file a user hands phaseguard, and every
file-system failure, ends in one line ``phaseguard: error: ...`` naming the file, with exit
status 2, never a traceback; nothing in a user's file is ever executed.

The real CLI runs in-process (``phaseguard.cli.main``) on copies of the shared tiny run; only
the file size limit (a full disk) needs a subprocess of its own.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from phaseguard.cli import main
from phaseguard.loading import export_safetensors

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(capsys: pytest.CaptureFixture[str], *args: object) -> str:
    """Run ``phaseguard ARGS`` in-process: it must exit 2 with exactly one stderr line,
    ``phaseguard: error: ...``; that line."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("phaseguard: error: "), err
    return lines[0]


@pytest.fixture
def run(tiny_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny run, to damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


# -- checkpoints ---------------------------------------------------------------------------


class _WritesMarker:
    """Unpickling this object would call ``open(marker, "w")``: the file appears if it runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


#: Builds a bad checkpoint at ``path`` from the good one (its state and its bytes); unpickling
#: it may create ``marker``.
Builder = Callable[[dict, bytes, Path, Path], None]


def _changed(**fields: object) -> Builder:
    """The good checkpoint with ``fields`` replaced."""
    return lambda good, raw, path, marker: torch.save({**good, **fields}, path)


def _without(key: str) -> Builder:
    """The good checkpoint without ``key``."""
    return lambda good, raw, path, marker: torch.save(
        {k: v for k, v in good.items() if k != key}, path
    )


def _weights(edit: Callable[[dict], object]) -> Builder:
    """The good checkpoint with its weights passed through ``edit``."""

    def build(good: dict, raw: bytes, path: Path, marker: Path) -> None:
        model = dict(good["model"])
        edit(model)
        torch.save({**good, "model": model, "eval_model": {}}, path)

    return build


def _bytes(make: Callable[[bytes, Path], bytes]) -> Builder:
    """The bytes ``make(good file's bytes, marker)``."""
    return lambda good, raw, path, marker: path.write_bytes(make(raw, marker))


def _wider(good: dict, raw: bytes, path: Path, marker: Path) -> None:
    """The good weights under the config of a wider model."""
    assert "width: 8" in good["config"]
    torch.save({**good, "config": good["config"].replace("width: 8", "width: 16")}, path)


FIRST = "features.0.0.weight"  # the first weight of the tiny smallcnn, [8, 1, 3, 3]
#: A "billion laughs" YAML: 9**9 values once its aliases are expanded.
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
)

#: id -> (builds the bad file, fragments its error line must hold)
BAD_CHECKPOINTS: dict[str, tuple[Builder, tuple[str, ...]]] = {
    "zero-bytes": (_bytes(lambda raw, m: b""), ("empty",)),
    "truncated": (_bytes(lambda raw, m: raw[: len(raw) // 2]), ("truncated",)),
    "random-bytes": (
        _bytes(lambda raw, m: random.Random(0).randbytes(4096)),
        ("not a checkpoint",),
    ),
    "text": (_bytes(lambda raw, m: b"model: resnet18\n"), ("not a checkpoint",)),
    "pickle-with-code": (
        _bytes(lambda raw, m: pickle.dumps(_WritesMarker(m))),
        ("refused", "pickle", "open"),
    ),
    "torch-zip-with-code": (
        lambda good, raw, path, m: torch.save({**good, "extra": _WritesMarker(m)}, path),
        ("refused", "code"),
    ),
    "dict-without-keys": (
        lambda good, raw, path, m: torch.save({"a": 1}, path),
        ("not a phaseguard checkpoint",),
    ),
    "list": (
        lambda good, raw, path, m: torch.save([1, 2], path),
        ("not a phaseguard checkpoint",),
    ),
    "tensor": (
        lambda good, raw, path, m: torch.save(torch.zeros(3), path),
        ("not a phaseguard checkpoint",),
    ),
    "foreign-torch-checkpoint": (
        lambda good, raw, path, m: torch.save({"state_dict": good["model"], "epoch": 3}, path),
        ("not a phaseguard checkpoint",),
    ),
    "newer-version": (_changed(version=2), ("version 2",)),
    "no-model": (_without("model"), ("no model",)),
    "no-meta": (_without("meta"), ("no meta",)),
    "epoch-not-a-number": (_changed(epoch="three"), ("epoch", "'three'")),
    "epoch-a-tensor": (_changed(epoch=torch.zeros(3)), ("epoch", "tensor")),
    "meta-not-a-mapping": (_changed(meta="fashion"), ("meta",)),
    "meta-wrong-types": (
        _changed(meta={"dataset": "x", "num_classes": "ten", "image_shape": [1], "classes": []}),
        ("meta", "num_classes"),
    ),
    "config-not-text": (_changed(config=5), ("config",)),
    "config-not-yaml": (_changed(config="train: [1"), ("config",)),
    "config-invalid": (_changed(config="train: {epochs: abc}\n"), ("config", "train.epochs")),
    "config-alias-bomb": (_changed(config=ALIAS_BOMB), ("config", "alias")),
    "model-not-tensors": (_changed(model={"w": "x"}), ("model", "tensors")),
    "missing-weights": (_weights(lambda m: [m.pop(k) for k in list(m)[:2]]), ("missing", FIRST)),
    "unexpected-weights": (
        _weights(lambda m: m.update({"head.extra": torch.zeros(1)})),
        ("unexpected", "head.extra"),
    ),
    "shape-mismatch": (
        _weights(lambda m: m.update({FIRST: torch.zeros(2, 2)})),
        (FIRST, "[2, 2]", "[8, 1, 3, 3]"),
    ),
    "another-models-config": (_wider, (FIRST, "[8, 1, 3, 3]", "[16, 1, 3, 3]")),
}


def _bad_checkpoint(name: str, run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(the bad checkpoint ``name`` in tmp_path, the marker file its code would create)."""
    good_path = run / "checkpoints" / "best.pt"
    good = torch.load(good_path, weights_only=True)
    path, marker = tmp_path / f"{name}.pt", tmp_path / "MARKER"
    BAD_CHECKPOINTS[name][0](good, good_path.read_bytes(), path, marker)
    return path, marker


@pytest.mark.parametrize("name", list(BAD_CHECKPOINTS))
def test_a_bad_checkpoint_is_one_line_naming_it_and_runs_nothing(name, run, tmp_path, capsys):
    """Promise: any file handed to phaseguard as a .pt checkpoint that is not a sound one of
    its models (empty, truncated, random, a pickle or torch file carrying code, a torch file of
    another shape, wrong field types, weights of another model) is refused in one error line
    that names the file and what is wrong with it; code in the file never runs."""
    path, marker = _bad_checkpoint(name, run, tmp_path)
    line = one_error_line(capsys, "export", path, "--out", tmp_path / "x.safetensors")
    assert str(path) in line
    for fragment in BAD_CHECKPOINTS[name][1]:
        assert fragment in line
    assert "weights_only" not in line
    assert not marker.exists()
    assert not (tmp_path / "x.safetensors").exists()


def test_the_code_carrying_payload_is_live(tmp_path):
    """Promise of the test above: its code-carrying files would create the marker if anything
    unpickled them (so "no marker" means nothing ran, not a dud payload)."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_WritesMarker(marker)))
    assert marker.exists()


@pytest.mark.parametrize("name", ["torch-zip-with-code", "epoch-not-a-number"])
def test_resuming_from_a_bad_checkpoint_is_one_line(name, run, tmp_path, capsys):
    """Promise: ``train --resume`` of a run whose last checkpoint is damaged or carries code
    says so in one line naming the checkpoint, runs no code and trains nothing."""
    bad, marker = _bad_checkpoint(name, run, tmp_path)
    last = run / "checkpoints" / "last.pt"
    shutil.copyfile(bad, last)
    log_before = (run / "log.csv").read_text()
    line = one_error_line(capsys, "train", "--resume", run)
    assert str(last) in line
    assert not marker.exists()
    assert (run / "log.csv").read_text() == log_before


def test_a_good_checkpoint_and_export_still_load(run, tmp_path, capsys):
    """Promise (the other side of the checks above): the run's own checkpoint exports, and the
    export evaluates."""
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "m.safetensors")]) == 0
    out = tmp_path / "e.json"
    args = ["eval", str(tmp_path / "m.safetensors"), "--attacks", "natural", "--n", "4"]
    assert main([*args, "--device", "cpu", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["attacks"]["natural"]["n"] == 4


# -- safetensors exports -------------------------------------------------------------------


def _resave(src: Path, dst: Path, tensors=None, metadata=None, drop: bool = False) -> None:
    """``src`` written to ``dst`` with its tensors or metadata replaced (``drop``: none)."""
    with safe_open(str(src), framework="pt") as fh:
        meta = fh.metadata()
    state = load_file(str(src))
    state = tensors(state) if tensors else state
    save_file(state, str(dst), metadata=None if drop else {**meta, **(metadata or {})})


BAD_EXPORTS = {
    "zero-bytes": (lambda src, dst: dst.write_bytes(b""), ("safetensors",)),
    "random-bytes": (
        lambda src, dst: dst.write_bytes(random.Random(1).randbytes(3000)),
        ("safetensors",),
    ),
    "truncated": (
        lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]),
        ("truncated",),
    ),
    "wrong-keys": (
        lambda src, dst: _resave(src, dst, tensors=lambda s: {"x." + k: v for k, v in s.items()}),
        ("missing", "unexpected", "x."),
    ),
    "wrong-shape": (
        lambda src, dst: _resave(src, dst, tensors=lambda s: {**s, FIRST: torch.zeros(3)}),
        (FIRST, "[3]"),
    ),
    "no-metadata": (lambda src, dst: _resave(src, dst, drop=True), ("not a phaseguard export",)),
    "meta-not-json": (
        lambda src, dst: _resave(src, dst, metadata={"phaseguard_meta": "{oops"}),
        ("phaseguard_meta", "not JSON"),
    ),
    "meta-wrong-shape": (
        lambda src, dst: _resave(src, dst, metadata={"phaseguard_meta": '{"dataset": 3}'}),
        ("phaseguard_meta",),
    ),
    "config-invalid": (
        lambda src, dst: _resave(src, dst, metadata={"phaseguard_config": "optim: {lr: fast}"}),
        ("config", "optim.lr"),
    ),
    "config-not-yaml": (
        lambda src, dst: _resave(src, dst, metadata={"phaseguard_config": "a: [1"}),
        ("config",),
    ),
}


@pytest.fixture(scope="module")
def good_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_safetensors(tiny_run, tmp_path_factory.mktemp("export") / "m.safetensors")


@pytest.mark.parametrize("name", list(BAD_EXPORTS))
def test_a_bad_safetensors_export_is_one_line_naming_it(name, good_export, tmp_path, capsys):
    """Promise: a .safetensors file that is not a sound phaseguard export (not safetensors,
    truncated, weights of another shape or name, missing or garbage phaseguard_meta
    metadata, a config that is not valid) is one error line naming the file and the problem."""
    path = tmp_path / f"{name}.safetensors"
    BAD_EXPORTS[name][0](good_export, path)
    args = ["--attacks", "natural", "--n", "4", "--device", "cpu", "--out", tmp_path / "e.json"]
    line = one_error_line(capsys, "eval", path, *args)
    assert str(path) in line
    for fragment in BAD_EXPORTS[name][1]:
        assert fragment in line
    assert not (tmp_path / "e.json").exists()


# -- report --------------------------------------------------------------------------------


def _log_cell(text: str) -> str:
    """log.csv with its second row's second cell replaced by a word."""
    lines = text.splitlines()
    cells = lines[2].split(",")
    cells[1] = "oops"
    lines[2] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _log_truncated(text: str) -> str:
    """log.csv cut in its last row (a torn write): the row keeps its first 3 cells."""
    lines = text.splitlines()
    lines[-1] = ",".join(lines[-1].split(",")[:3])
    return "\n".join(lines) + "\n"


def _write(name: str, damage: Callable[[str], str] | bytes | str):
    def apply(run: Path) -> None:
        path = run / name
        if isinstance(damage, bytes):
            path.write_bytes(damage)
        elif isinstance(damage, str):
            path.write_text(damage)
        else:
            path.write_text(damage(path.read_text()))

    return apply


BAD_RUN_FILES = {
    "eval-not-json": ("eval.json", _write("eval.json", "{'attacks': "), ("not JSON",)),
    "eval-binary": ("eval.json", _write("eval.json", b"\xff\xfe\x00garbage"), ("eval.json",)),
    "eval-a-list": ("eval.json", _write("eval.json", "[1, 2]"), ("a list",)),
    "eval-no-attacks": ("eval.json", _write("eval.json", '{"n": 5}'), ("no attacks",)),
    "eval-attacks-wrong": (
        "eval.json",
        _write("eval.json", '{"attacks": {"pgd20": 0.5}}'),
        ("attacks",),
    ),
    "eval-a-folder": ("eval.json", lambda run: (run / "eval.json").mkdir(), ("cannot read",)),
    "log-non-numeric-cell": ("log.csv", _write("log.csv", _log_cell), ("line 3", "'oops'")),
    "log-truncated-row": ("log.csv", _write("log.csv", _log_truncated), ("line 4", "truncated")),
    "log-binary": ("log.csv", _write("log.csv", b"epoch,loss\n\xff\xfe,1\n"), ("not text",)),
    "analysis-not-json": ("analysis.json", _write("analysis.json", "clean=0.5"), ("not JSON",)),
    "analysis-wrong-type": (
        "analysis.json",
        _write("analysis.json", '{"clean": "high", "n": 4}'),
        ("clean", "'high'"),
    ),
}


@pytest.mark.parametrize("name", list(BAD_RUN_FILES))
def test_report_on_a_damaged_run_file_is_one_line_naming_it(name, run, tmp_path, capsys):
    """Promise: ``phaseguard report`` on a run whose eval.json, log.csv or analysis.json is
    damaged (not JSON or not text, JSON of another shape, a log cell that is not a number, a
    truncated log row) is one error line naming that file, and writes no page."""
    filename, damage, fragments = BAD_RUN_FILES[name]
    damage(run)
    out = tmp_path / "r.html"
    line = one_error_line(capsys, "report", run, "--no-eps-curve", "--out", out)
    assert str(run / filename) in line
    for fragment in fragments:
        assert fragment in line
    assert not out.exists() and not list(tmp_path.glob("r_*.png"))


# -- file-system failures ------------------------------------------------------------------


@pytest.fixture
def unwritable(tmp_path: Path):
    """A folder this process cannot create files in: a read-only (0o555) folder, or for root,
    whom permissions do not stop, /sys, where the kernel refuses new files even to root."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    folder = Path("/sys")
    probe = folder / f"phaseguard-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        yield folder
        return
    probe.unlink()
    pytest.skip("running as root, and /sys takes new files here: no folder refuses root")


def _command(command: str, run: Path, out: Path) -> list[object]:
    """``command`` on ``run`` (train: its config, one epoch) writing to ``out``, as quick as it
    goes."""
    return {
        "train": ["train", run / "config.yaml", "train.epochs=1"],
        "eval": ["eval", run, "--attacks", "natural", "--n", "4", "--device", "cpu"],
        "analyze": ["analyze", run, "--attack", "fgsm", "--n", "4", "--device", "cpu"],
        "report": ["report", run, "--no-eps-curve"],
        "export": ["export", run],
    }[command] + ["--out", out]


@pytest.mark.parametrize("command", ["train", "eval", "analyze", "report", "export"])
def test_an_output_folder_that_refuses_writes_is_one_line(command, run, unwritable, capsys):
    """Promise: when the output folder cannot be written (read-only), every command that
    writes says so in one line naming that folder's file, instead of a traceback."""
    line = one_error_line(capsys, *_command(command, run, unwritable / f"out-{command}"))
    assert line.startswith("phaseguard: error: cannot ") and str(unwritable) in line


@pytest.mark.parametrize("command", ["train", "eval", "analyze", "report", "export"])
def test_a_file_where_a_folder_should_be_is_one_line(command, run, tmp_path, capsys):
    """Promise: an --out whose folder is an existing regular file (for train the run folder
    itself) is one line naming that file."""
    regular = tmp_path / "regular"
    regular.write_text("not a folder\n")
    out = regular if command == "train" else regular / "out"
    line = one_error_line(capsys, *_command(command, run, out))
    assert str(regular) in line and "cannot" in line
    assert regular.read_text() == "not a folder\n"


@pytest.mark.parametrize("command", ["report", "export"])
def test_a_folder_where_the_output_file_should_be_is_one_line(command, run, tmp_path, capsys):
    """Promise: an --out that is an existing folder is one line naming it ("Is a directory");
    the folder is left as it was."""
    folder = tmp_path / "folder"
    folder.mkdir()
    line = one_error_line(capsys, *_command(command, run, folder))
    assert f"cannot write {folder}: Is a directory" in line
    assert list(folder.iterdir()) == []


def test_symbolic_link_loops_are_one_line(run, tmp_path, capsys):
    """Promise: a symbolic link loop as the model to read, as the run of a report, or as the
    folder of an --out is one line naming it."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    line = one_error_line(capsys, "export", loop, "--out", tmp_path / "x.safetensors")
    assert f"cannot read {loop}: Too many levels of symbolic links" in line
    line = one_error_line(capsys, "report", loop, "--no-eps-curve")
    assert f"cannot read {loop}: Too many levels of symbolic links" in line
    line = one_error_line(capsys, "export", run, "--out", loop / "x.safetensors")
    assert str(loop) in line


def test_an_eval_out_in_a_missing_folder_creates_it(run, tmp_path, capsys):
    """Promise: eval --out into a folder that does not exist yet creates it (rather than
    failing after the attacks ran) and writes the JSON there (analyze shares that code)."""
    out = tmp_path / "new" / "folder" / "out.json"
    capsys.readouterr()
    assert main([str(a) for a in _command("eval", run, out)]) == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["n"] == 4


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_full_disk_is_one_line_and_leaves_no_torn_file(tiny_run, tmp_path):
    """Promise: a write that fails for lack of space (here: the file size limit, EFBIG, which
    without the CLI's own handling would kill the process by SIGXFSZ) is one line naming the
    file, and leaves neither a torn file nor a temporary one."""
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "phaseguard", "export", str(tiny_run), "--out", str(out / "m.st")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"phaseguard: error: cannot write {out / 'm.st'}: File too large"
    assert list(out.iterdir()) == []
