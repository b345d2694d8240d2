"""Hostile configs and datasets: every bad input ends in ONE line ``phaseguard: error: ...``
naming the problem, with exit status 2; never a traceback, a hang or runaway memory. Each test
states the promise it checks; every case drives the real CLI (``phaseguard.cli.main``) on real
files built in a temporary folder."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import resource
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml
from PIL import Image

from phaseguard.cli import main

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``phaseguard ARGV`` in this process: exit status, stdout, stderr."""
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_error(rc: int, err: str, *fragments: str) -> str:
    """Exit status 2 and stderr exactly one ``phaseguard: error:`` line holding every fragment."""
    lines = err.splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("phaseguard: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def one_error(capsys: pytest.CaptureFixture[str], argv: list[object], *fragments: str) -> str:
    rc, _, err = run_cli(capsys, *argv)
    return assert_one_error(rc, err, *fragments)


# --- YAML bombs: run in a child process with a time and memory limit ------------------------

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)  # 9**9 = 387,420,489 strings once expanded, in 332 bytes


def indented(text: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in text.splitlines())


# anchors defined among the method's options, expanded where the old reader walked every item
BOMB = f"method:\n  name: pgd_at\n{indented(LAUGHS, 2)}eval:\n  attacks: *i\n"
MERGE_BOMB = "method:\n  name: pgd_at\n  a: &a {k0: 1, k1: 2}\n" + "".join(
    f"  {c}: &{c} {{<<: [*{p}, *{p}]}}\n"
    for p, c in zip("abcdefghijklmnopqrstuvwxy", "bcdefghijklmnopqrstuvwxyz")
)  # each level merges the one below twice: 2**25 key pairs flattened
FLOW_BOMB = (
    "["
    + ", ".join(
        ["&a [l, l, l, l, l, l, l, l, l]"]
        + [f"&{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    )
    + "]"
)

BOMB_CASES = {
    # case: (files to write {name: text}, argv with {dir} for the folder, fragments expected)
    "config-file": ({"bomb.yaml": BOMB}, ["config", "show", "{dir}/bomb.yaml"], ["bomb.yaml"]),
    "base-chain": (
        {"bomb.yaml": BOMB, "child.yaml": "base: bomb.yaml\ntrain:\n  epochs: 1\n"},
        ["config", "show", "{dir}/child.yaml"],
        ["bomb.yaml"],
    ),
    "merge-keys": ({"merge.yaml": MERGE_BOMB}, ["config", "show", "{dir}/merge.yaml"], []),
    "override": ({}, ["config", "show", "quick", f"eval.attacks={FLOW_BOMB}"], ["override"]),
    "run-config-yaml": (
        {"run/config.yaml": BOMB},
        ["train", "--resume", "{dir}/run"],
        [],
    ),
}
CHILD = """
import contextlib, io, json, signal, sys
from phaseguard.cli import main
def hung(*_):
    raise TimeoutError("still running after 10 s")
signal.signal(signal.SIGALRM, hung)
results = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    signal.alarm(10)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except BaseException as exc:  # a traceback, a timeout or MemoryError: the case failed
        rc = "raised " + repr(exc)[:300]
    finally:
        signal.alarm(0)
    results[name] = [rc, err.getvalue()[:2000]]
print(json.dumps(results))
"""


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """Every bomb case run by the CLI in one child process (4 GiB of address space, 10 s per
    case, 60 s in all), so that a regression fails these tests instead of hanging them."""
    folder = tmp_path_factory.mktemp("bombs")
    cases = {}
    for name, (files, argv, _) in BOMB_CASES.items():
        case_dir = folder / name
        for rel, text in files.items():
            (case_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (case_dir / rel).write_text(text)
        cases[name] = [a.replace("{dir}", str(case_dir)) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(cases)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            preexec_fn=_limit_memory,
        )
    except subprocess.TimeoutExpired:
        return {name: ["timed out", ""] for name in cases}
    if proc.returncode != 0:
        return {name: [f"child exited {proc.returncode}", proc.stderr[-2000:]] for name in cases}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_bomb_fixture_is_no_bomb_itself() -> None:
    """The YAML bombs below are what they claim: small files whose aliases expand a billion-fold
    (checked by counting, without expanding them)."""
    assert len(BOMB) < 600 and len(MERGE_BOMB) < 1000
    node = yaml.compose(BOMB, Loader=yaml.SafeLoader)
    attacks = dict((k.value, v) for k, v in node.value)["eval"].value[0][1]
    count = {}

    def size(n: yaml.Node) -> int:
        if id(n) not in count:
            count[id(n)] = 1 + sum(
                size(c) for c in getattr(n, "value", ()) if isinstance(c, yaml.Node)
            )
        return count[id(n)]

    assert size(attacks) > 387_000_000


@pytest.mark.parametrize("case", list(BOMB_CASES))
def test_yaml_alias_bomb_is_refused_in_one_line(bomb_results: dict[str, list], case: str) -> None:
    """A "billion laughs" YAML (nested anchors and aliases; also merge keys ``<<``) in a config
    file, in a file named by ``base:``, in a ``key=value`` override and in a run's config.yaml
    is refused at once in one line that says its aliases expand too far, instead of being
    expanded until the machine runs out of memory."""
    rc, err = bomb_results[case]
    assert_one_error(rc, err, "expand", "more than 100000 values", *BOMB_CASES[case][2])


# --- configs: structure -----------------------------------------------------------------------


def test_recursive_alias_and_deep_nesting_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A YAML alias inside the value it names (a recursive structure) and lists nested 3000
    deep are each refused in one line, not a RecursionError traceback."""
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("method: &m {name: pgd_at, again: *m}\n")
    one_error(capsys, ["config", "show", recursive], str(recursive), "contains it")
    deep = tmp_path / "deep.yaml"
    deep.write_text("model:\n  kwargs:\n    w: " + "[" * 3000 + "]" * 3000 + "\n")
    one_error(capsys, ["config", "show", deep], str(deep), "nested")


CONFIG_FILES = {
    # case: (file name -> content, or bytes), the file to show, fragments expected
    "base-cycle": (
        {"one.yaml": "base: two.yaml\n", "two.yaml": "base: one.yaml\n"},
        "one.yaml",
        ["includes itself through 'base:'", "two.yaml"],
    ),
    "base-self": ({"self.yaml": "base: self.yaml\n"}, "self.yaml", ["includes itself"]),
    "base-missing": ({"c.yaml": "base: gone.yaml\n"}, "c.yaml", ["cannot read config", "gone"]),
    "base-not-a-name": ({"c.yaml": "base: [1, 2]\n"}, "c.yaml", ["base must be a preset"]),
    "base-nul": ({"c.yaml": 'base: "a\\0b.yaml"\n'}, "c.yaml", ["holds a NUL character"]),
    "base-unknown-preset": ({"c.yaml": "base: nosuch\n"}, "c.yaml", ["'nosuch' is neither"]),
    "unknown-key": (
        {"c.yaml": "train:\n  epoch: 3\n"},
        "c.yaml",
        ["unknown config key 'train.epoch'"],
    ),
    "unknown-section": ({"c.yaml": "trian: {}\n"}, "c.yaml", ["unknown config key 'trian'"]),
    "non-string-keys": ({"c.yaml": "1: a\nnull: b\n"}, "c.yaml", ["unknown config key"]),
    "ill-typed-key": (
        {"c.yaml": "train:\n  epochs: three\n"},
        "c.yaml",
        ["train.epochs: expected an integer"],
    ),
    "section-not-mapping": ({"c.yaml": "train: 5\n"}, "c.yaml", ["train: expected a mapping"]),
    "list-not-mapping": ({"c.yaml": "- a\n- b\n"}, "c.yaml", ["must be a mapping of sections"]),
    "tab-indent": ({"c.yaml": "train:\n\tepochs: 3\n"}, "c.yaml", ["not valid YAML", "line 2"]),
    "unclosed": ({"c.yaml": "train: [1,\n"}, "c.yaml", ["not valid YAML"]),
    "invalid-utf8": ({"c.yaml": b"train:\n  device: \xff\xfe\x80\n"}, "c.yaml", ["not valid YAML"]),
    "bad-date": ({"c.yaml": "data:\n  name: 2020-13-45\n"}, "c.yaml", ["not valid YAML", "month"]),
    "huge-int": (
        {"c.yaml": "train:\n  epochs: " + "9" * 5000 + "\n"},
        "c.yaml",
        ["not valid YAML"],
    ),
    "python-tag": (
        {"c.yaml": "train: !!python/object/apply:os.system [echo hi]\n"},
        "c.yaml",
        ["not valid YAML"],
    ),
    "over-1-MiB": (
        {"c.yaml": "# " + "x" * (1 << 20) + "\n"},
        "c.yaml",
        ["larger than 1048576 bytes"],
    ),
    "a-directory": ({"d.yaml/x": "a: 1\n"}, "d.yaml", ["cannot read config", "not a regular file"]),
    "method-name-a-list": ({"c.yaml": "method:\n  name: [1]\n"}, "c.yaml", ["method.name"]),
    "kwargs-non-string": ({"c.yaml": "model:\n  kwargs: {1: 2}\n"}, "c.yaml", ["model.kwargs"]),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_bad_config_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Each malformed config file (a ``base:`` cycle, unknown or ill-typed keys, invalid YAML or
    UTF-8, an unconstructible scalar, a Python tag, a huge or non-regular file) is one error
    line that names the file or the key and the problem."""
    files, shown, fragments = CONFIG_FILES[case]
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    one_error(capsys, ["config", "show", tmp_path / shown], *fragments)


# --- configs: meaningless values ------------------------------------------------------------

BAD_VALUES = [
    # (override, fragments of the message)
    ("attack.eps=-0.1", ["attack.eps=-0.1", "[0, 1]"]),
    ("attack.eps=1.5", ["attack.eps=1.5", "[0, 1]"]),
    ("attack.eps=.nan", ["attack.eps=nan", "[0, 1]"]),
    ("attack.step=0", ["attack.step=0", "> 0"]),
    ("attack.step=-0.01", ["attack.step=-0.01", "> 0"]),
    ("attack.step=.nan", ["attack.step=nan", "> 0"]),
    ("attack.steps=0", ["attack.steps=0", "at least 1"]),
    ("attack.steps=-3", ["attack.steps=-3", "at least 1"]),
    ("train.batch_size=0", ["train.batch_size=0", "at least 1"]),
    ("train.batch_size=-8", ["train.batch_size=-8", "at least 1"]),
    ("train.epochs=0", ["train.epochs=0", "at least 1"]),
    ("optim.lr=-0.1", ["optim.lr=-0.1", ">= 0"]),
    ("optim.lr=.nan", ["optim.lr=nan", "finite"]),
    ("optim.lr=.inf", ["optim.lr=inf", "finite"]),
    ("optim.lr=1e400", ["optim.lr", "too large"]),
    ("optim.weight_decay=-5e-4", ["optim.weight_decay=-0.0005", ">= 0"]),
    ("optim.momentum=1.5", ["optim.momentum=1.5", "[0, 1)"]),
    ("train.threads=-1", ["train.threads=-1", "at least 1"]),
    ("train.threads=0", ["train.threads=0", "at least 1"]),
    ("data.padding=-1", ["data.padding=-1", "at least 0"]),
    ("data.val_per_class=0", ["data.val_per_class=0", "at least 1"]),
    ("data.train_size=0", ["data.train_size=0", "at least 1"]),
    ("data.train_size=-5", ["data.train_size=-5", "at least 1"]),
    ("train.device=cuda:x", ["train.device='cuda:x'", "auto, cpu, cuda or cuda:N"]),
    ("train.device=banana", ["train.device='banana'", "auto, cpu, cuda or cuda:N"]),
    ("train.device=''", ["train.device=''"]),
    ("eval.n=0", ["eval.n=0", "at least 1"]),
    ("eval.batch_size=0", ["eval.batch_size=0", "at least 1"]),
    ("train.seed=-1", ["train.seed=-1", "at least 0"]),
    ("train.val_attack_steps=0", ["train.val_attack_steps=0", "at least 1"]),
    ("train.epochs=99999999999999999999999", ["train.epochs", "too large"]),
    ("averaging.ema_decay=2", ["averaging.ema_decay=2.0", "[0, 1]"]),
    ("schedule.gamma=0", ["schedule.gamma=0.0", "> 0"]),
    ("schedule.milestones=[100,-1]", ["schedule.milestones[1]=-1", "at least 0"]),
    ("awp.gamma=-1", ["awp.gamma=-1.0", ">= 0"]),
    ("model.normalize=[[0.5],[0]]", ["model.normalize", "std > 0"]),
    ("attack.eps=1/0", ["attack.eps", "expected a number"]),
    ("train.precision=fp8", ["train.precision", "'fp8' is not one of"]),
]


@pytest.mark.parametrize(
    "override, fragments", BAD_VALUES, ids=[override for override, _ in BAD_VALUES]
)
def test_meaningless_settings_are_refused_when_the_config_is_built(
    capsys: pytest.CaptureFixture[str], override: str, fragments: list[str]
) -> None:
    """A setting with no meaning (a negative or NaN budget, zero steps, epochs or batch, a
    negative or infinite learning rate, a bad device string, ...) is refused as soon as the
    config is built, in one line naming the dotted key, the value and what is allowed."""
    one_error(capsys, ["config", "show", "quick", override], *fragments)


@pytest.mark.parametrize(
    "overrides",
    [
        ["attack.eps=0"],  # a natural-training baseline
        ["method.name=standard", "attack.eps=0"],
        ["attack.norm=l2", "attack.eps=2.0", "attack.step=0.5"],  # L2 budgets exceed 1
        ["optim.lr=0", "optim.weight_decay=0"],
        ["data.padding=0", "train.device=cpu", "train.threads=1", "data.train_size=null"],
        ["train.device=cuda:3"],  # another machine's GPU: checked when a run starts
    ],
    ids=lambda o: " ".join(o),
)
def test_meaningful_edge_values_are_kept(capsys: pytest.CaptureFixture[str], overrides) -> None:
    """The edges that mean something stay valid: eps 0 (natural training), L2 budgets above 1,
    learning rate and weight decay 0, no padding, a CUDA device this machine lacks."""
    rc, out, err = run_cli(capsys, "config", "show", "quick", *overrides)
    assert rc == 0 and err == "", err
    assert yaml.safe_load(out)["attack"]["eps"] >= 0


# --- datasets: npz ----------------------------------------------------------------------------


def npz_arrays(n: int = 40, size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 1, size, size), dtype=np.uint8)
    y = np.arange(n) % 2
    return {"x_train": x, "y_train": y, "x_test": x[:10], "y_test": y[:10]}


def nan_images() -> np.ndarray:
    x = np.full((40, 1, 8, 8), 0.5)
    x[3, 0, 2, 2] = np.nan
    return x


NPZ_CASES = {
    # case: (arrays replaced, fragments)
    "label-1e9-no-classes": (
        {"y_train": np.r_[np.arange(39) % 2, 10**9]},
        ["largest label is 1000000000"],
    ),
    "uint64-label": ({"y_train": np.full(40, 2**64 - 1, np.uint64)}, ["too large"]),
    "negative-label": ({"y_train": np.r_[-1, np.arange(39) % 2]}, ["y_train contains label -1"]),
    "label-beyond-classes": (
        {"y_test": np.full(10, 5), "classes": np.array(["a", "b"])},
        ["y_test contains label 5, outside [0, 2)"],
    ),
    "nan-images": ({"x_train": nan_images()}, ["'x_train'", "NaN"]),
    "float-out-of-range": (
        {"x_test": np.full((10, 1, 8, 8), 3.0)},
        ["'x_test'", "not within [0, 1]"],
    ),
    "int64-images": ({"x_train": np.zeros((40, 1, 8, 8), np.int64)}, ["'x_train' is int64"]),
    "complex-images": ({"x_train": np.zeros((40, 8, 8), np.complex64)}, ["'x_train' is complex64"]),
    "flat-images": ({"x_train": np.zeros((40, 64), np.uint8)}, ["'x_train' has shape [40, 64]"]),
    "5-channels": ({"x_train": np.zeros((40, 5, 8, 8), np.uint8)}, ["'x_train' has shape"]),
    "float-labels": ({"y_train": np.zeros(40, np.float32)}, ["'y_train' must be integer labels"]),
    "label-matrix": (
        {"y_train": np.zeros((40, 2), np.int64)},
        ["'y_train' must be integer labels"],
    ),
    "empty": (
        {"x_train": np.zeros((0, 1, 8, 8), np.uint8), "y_train": np.zeros(0, np.int64)},
        ["the train split is empty"],
    ),
    "zero-pixel-images": (
        {"x_train": np.zeros((40, 1, 0, 0), np.uint8), "x_test": np.zeros((10, 1, 0, 0), np.uint8)},
        ["0x0 pixels"],
    ),
    "single-class": (
        {"y_train": np.zeros(40, np.int64), "y_test": np.zeros(10, np.int64)},
        ["1 class"],
    ),
    "single-class-of-named": (
        {"y_train": np.zeros(40, np.int64), "classes": np.array(["a", "b", "c"])},
        ["every training label is 0"],
    ),
    "counts-differ": ({"y_train": np.arange(39) % 2}, ["x_train has 40 images but y_train has 39"]),
    "shapes-differ": ({"x_test": np.zeros((10, 1, 9, 9), np.uint8)}, ["test images are [1, 9, 9]"]),
    "classes-not-strings": ({"classes": np.array([1.0, 2.0])}, ["'classes' must be a 1-d string"]),
    "object-array": ({"classes": np.array([{"a": 1}], dtype=object)}, ["cannot read"]),
    "missing-key": ({"y_test": None}, ["lacks y_test"]),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_bad_npz_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Each malformed .npz dataset (an absurd label, NaN or out-of-range images, wrong shapes
    or dtypes, empty arrays, a single class, counts or shapes that disagree) is one DataError
    line naming the file and the problem, at once (one label 1e9 no longer builds 1e9 class
    names)."""
    change, fragments = NPZ_CASES[case]
    arrays = {k: v for k, v in {**npz_arrays(), **change}.items() if v is not None}
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    one_error(capsys, ["data", "info", "npz", "--root", path], str(path), *fragments)


def test_npz_whose_header_claims_a_terabyte_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An .npz member whose .npy header claims 10**12 bytes that the file does not hold is one
    line naming the file, not a MemoryError traceback or an allocation of a terabyte."""
    path = tmp_path / "liar.npz"
    np.savez(path, **npz_arrays())
    header = {"descr": "|u1", "fortran_order": False, "shape": (10**12,)}
    npy = np.lib.format.magic(1, 0)
    text = repr(header).encode()
    text += b" " * (-(len(npy) + 2 + len(text) + 1) % 64) + b"\n"
    npy += struct.pack("<H", len(text)) + text + b"\0" * 128
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("x_test.npy.tmp", b"")  # keep the order of the others
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "out.npz", "w") as dst:
        for info in src.infolist():
            if info.filename == "x_train.npy":
                dst.writestr("x_train.npy", npy)
            elif info.filename != "x_test.npy.tmp":
                dst.writestr(info, src.read(info))
    liar = tmp_path / "out.npz"
    one_error(capsys, ["data", "info", "npz", "--root", liar], str(liar))


# --- datasets: IDX (MNIST, Fashion-MNIST) -------------------------------------------------------

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def idx(array: np.ndarray, magic: int | None = None, shape: tuple[int, ...] | None = None) -> bytes:
    """IDX bytes of uint8 ``array``; ``magic`` and ``shape`` replace the true header fields."""
    shape = array.shape if shape is None else shape
    magic = 0x800 | len(shape) if magic is None else magic
    return struct.pack(">I", magic) + struct.pack(f">{len(shape)}I", *shape) + array.tobytes()


def idx_files(**change: bytes | tuple[str, bytes]) -> dict[str, bytes]:
    """File name -> bytes of a valid 2-class set of 8x8 images, with ``change`` replacing files
    (a pair gives the replacement's file name too, e.g. gzipped)."""
    arrays = npz_arrays()
    files = {
        IDX_NAMES[k]: idx(a[:, 0] if a.ndim == 4 else a.astype(np.uint8)) for k, a in arrays.items()
    }
    for key, value in change.items():
        del files[IDX_NAMES[key]]
        name, data = value if isinstance(value, tuple) else (IDX_NAMES[key], value)
        files[name] = data
    return files


U8 = np.zeros(0, np.uint8)
IDX_CASES = {
    # case: (files replaced, the file named, fragments)
    "dims-overflow-int64": (
        {"x_train": idx(U8, shape=(2**22, 2**21, 2**21))},  # the product wraps to 0 in int64
        "train-images-idx3-ubyte",
        ["header says [4194304, 2097152, 2097152] (18446744073709551616 bytes)", "holds 0 bytes"],
    ),
    "huge-dims": (
        {"x_test": idx(U8, shape=(2**32 - 1, 2**32 - 1, 2**32 - 1))},
        "t10k-images-idx3-ubyte",
        ["truncated or padded"],
    ),
    "huge-dims-gzipped": (
        {
            "x_train": (
                "train-images-idx3-ubyte.gz",
                gzip.compress(idx(U8, shape=(10**6, 10**3, 10**3))),
            )
        },
        "train-images-idx3-ubyte.gz",
        ["(1000000000000 bytes)", "(it is gzipped)"],
    ),
    "wrong-magic": (
        {"x_train": idx(np.zeros((40, 8, 8), np.uint8), magic=0x00000D03)},
        "train-images-idx3-ubyte",
        ["not an IDX file of 3-d unsigned bytes", "magic 0x00000d03"],
    ),
    "labels-where-images-go": (
        {"x_test": idx(np.zeros(10, np.uint8))},
        "t10k-images-idx3-ubyte",
        ["not an IDX file of 3-d"],
    ),
    "empty-file": ({"y_train": b""}, "train-labels-idx1-ubyte", ["is truncated: 0 bytes"]),
    "padded": (
        {"y_test": idx(np.zeros(10, np.uint8)) + b"\0"},
        "t10k-labels-idx1-ubyte",
        ["padded"],
    ),
    "label-out-of-range": (
        {"y_train": idx(np.full(40, 200, np.uint8))},
        "",
        ["y_train contains label 200, outside [0, 10)"],
    ),
    "counts-differ": (
        {"y_test": idx(np.zeros(9, np.uint8))},
        "",
        ["x_test has 10 images but y_test has 9 labels"],
    ),
    "no-images": (
        {"x_train": idx(np.zeros((0, 8, 8), np.uint8)), "y_train": idx(U8)},
        "",
        ["the train split is empty"],
    ),
    "corrupt-gzip": (
        {"x_test": ("t10k-images-idx3-ubyte.gz", b"\x1f\x8b\x08\x00garbage")},
        "t10k-images-idx3-ubyte.gz",
        ["cannot read"],
    ),
}


@pytest.mark.parametrize("case", list(IDX_CASES))
def test_bad_idx_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Each malformed IDX set (dimensions whose product overflows or exceeds the file, a gzip
    that cannot hold what its header claims, wrong magic numbers, labels out of range, counts
    that disagree, no images) is one DataError line naming the file and the problem, decided
    from the header before any large read."""
    change, named, fragments = IDX_CASES[case]
    for name, data in idx_files(**change).items():
        (tmp_path / name).write_bytes(data)
    one_error(
        capsys, ["data", "info", "mnist", "--root", tmp_path], str(tmp_path / named), *fragments
    )


# --- datasets: CIFAR, SVHN, Tiny-ImageNet ---------------------------------------------------------


class Exploit:
    def __reduce__(self) -> tuple:
        return os.system, ("echo pwned",)


def cifar_folder(root: Path, **change: object) -> Path:
    """A CIFAR-10 folder (one 20-image training batch, a test batch, 2 class names), with
    ``change`` replacing a file's pickled content (``data_batch_1``, ``test_batch``,
    ``batches_meta``) or, as bytes, its raw bytes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = np.random.default_rng(0).integers(0, 256, (20, 3072), dtype=np.uint8)
    contents = {
        "data_batch_1": {b"data": x, b"labels": [i % 2 for i in range(20)]},
        "test_batch": {b"data": x[:6], b"labels": [i % 2 for i in range(6)]},
        "batches.meta": {b"label_names": [b"cat", b"dog"]},
    }
    for key, value in change.items():
        contents[key.replace("_meta", ".meta")] = value
    for name, content in contents.items():
        raw = content if isinstance(content, bytes) else pickle.dumps(content, protocol=2)
        (folder / name).write_bytes(raw)
    return folder


CIFAR_X = np.zeros((20, 3072), np.uint8)
CIFAR_CASES = {
    "data-wrong-shape": (
        {"data_batch_1": {b"data": np.zeros((20, 100), np.uint8), b"labels": [0] * 20}},
        ["data_batch_1 'data' must be uint8 [N, 3072], got uint8 [20, 100]"],
    ),
    "data-float": (
        {"test_batch": {b"data": np.zeros((6, 3072)), b"labels": [0] * 6}},
        ["test_batch 'data' must be uint8"],
    ),
    "labels-count": (
        {"data_batch_1": {b"data": CIFAR_X, b"labels": [0] * 19}},
        ["data_batch_1 'labels' must be 20 integers"],
    ),
    "label-huge": (
        {"data_batch_1": {b"data": CIFAR_X, b"labels": [2**70] * 20}},
        ["data_batch_1 holds a label too large"],
    ),
    "label-beyond-names": (
        {"test_batch": {b"data": CIFAR_X[:6], b"labels": [7] * 6}},
        ["y_test contains label 7, outside [0, 2)"],
    ),
    "no-labels": ({"test_batch": {b"data": CIFAR_X[:6]}}, ["test_batch has no 'labels' entry"]),
    "not-a-dict": ({"data_batch_1": [1, 2, 3]}, ["data_batch_1 holds a list, expected a dict"]),
    "names-not-a-list": ({"batches_meta": {b"label_names": 5}}, ["'label_names' must be a list"]),
    "single-name": ({"batches_meta": {b"label_names": [b"cat"]}}, ["outside [0, 1)"]),
    "code-in-pickle": ({"test_batch": {b"data": Exploit()}}, ["refusing to load posix.system"]),
    "garbage": ({"data_batch_1": b"\x80\x02garbage"}, ["data_batch_1 is not a readable pickle"]),
}


@pytest.mark.parametrize("case", list(CIFAR_CASES))
def test_bad_cifar_batches_are_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """Each wrong CIFAR batch or meta file (wrong shape or dtype, labels missing, miscounted,
    too large or beyond the class names, names that are no list, a pickle that is not a dict,
    calls code or is garbage) is one DataError line naming the folder, the file and the problem."""
    change, fragments = CIFAR_CASES[case]
    folder = cifar_folder(tmp_path, **change)
    one_error(capsys, ["data", "info", "cifar10", "--root", folder], str(folder), *fragments)


def test_cifar_batch_that_is_a_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CIFAR batch name that is a folder (or a pipe, which would block the read forever) is
    one line naming it, not an IsADirectoryError traceback."""
    folder = cifar_folder(tmp_path)
    (folder / "data_batch_2").mkdir()
    one_error(
        capsys, ["data", "info", "cifar10", "--root", folder], "data_batch_2", "not a regular file"
    )


def test_bad_svhn_labels_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An SVHN .mat file with a label outside 1..10 is one line naming the file."""
    x = np.zeros((32, 32, 3, 4), np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[1], [2], [11], [3]])})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[1], [2], [3], [4]])})
    one_error(
        capsys,
        ["data", "info", "svhn", "--root", tmp_path],
        str(tmp_path / "train_32x32.mat"),
        "y contains 11",
    )


def tiny_imagenet(root: Path, wnids: list[str], val_names: list[str]) -> Path:
    folder = root / "tiny-imagenet-200"
    for wnid in wnids:
        (folder / "train" / wnid / "images").mkdir(parents=True)
        Image.new("RGB", (64, 64)).save(folder / "train" / wnid / "images" / f"{wnid}_0.JPEG")
    (folder / "val" / "images").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(folder / "val" / "images" / "val_0.JPEG")
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnids[0]}\t0\t0\t63\t63\n" for name in val_names)
    )
    return folder


@pytest.mark.parametrize(
    "wnids, val_name, fragments",
    [
        (["n1", "n2"], "../../../etc/passwd", ["line 1", "is not a file name"]),
        (["n1"], "val_0.JPEG", ["1 class"]),
    ],
    ids=["path-in-annotations", "single-class"],
)
def test_bad_tiny_imagenet_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    wnids: list[str],
    val_name: str,
    fragments: list[str],
) -> None:
    """A Tiny-ImageNet annotation naming a path outside val/images, or a single class, is one
    line naming the folder or file and the problem."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = tiny_imagenet(tmp_path, wnids, [val_name])
    one_error(capsys, ["data", "info", "tiny-imagenet", "--root", folder], str(folder), *fragments)


def test_a_registered_readers_bad_dataset_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset from a user's registered reader is validated like the built-in ones: labels
    beyond its classes are one line naming the dataset, not an index error mid-training."""
    import torch

    from phaseguard.data import Dataset, register_dataset
    from phaseguard.data.registry import DATASETS

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # unregistered after
    x = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 9])
    register_dataset(
        "hostile-user-data", lambda root: Dataset("mine", x, labels, x, labels, ["a", "b", "c"])
    )
    one_error(
        capsys, ["data", "info", "hostile-user-data"], "dataset 'mine'", "label 9, outside [0, 3)"
    )


# --- datasets against the config: checked before training -----------------------------------


def train_config(path: Path, data_root: Path, *overrides: str) -> Path:
    """A tiny training config on the .npz at ``data_root``, with ``key: value`` overrides."""
    tree = {
        "data": {"name": "npz", "root": str(data_root), "val_per_class": 2, "padding": 1},
        "model": {"name": "smallcnn", "kwargs": {"width": 4}},
        "attack": {"eps": 0.1, "step": 0.05, "steps": 1},
        "schedule": {"name": "onecycle"},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "val_attack_steps": 1,
            "progress": False,
            "threads": 1,
            "device": "cpu",
            "precision": "fp32",
        },
    }
    for item in overrides:
        key, value = item.split("=")
        section, name = key.split(".")
        tree[section][name] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "size, overrides, fragments",
    [
        (2, [], ["model smallcnn needs images of at least 4x4 pixels; these are 2x2"]),
        (8, ["data.train_size=1000"], ["data.train_size=1000", "1..36"]),
        (8, ["data.val_per_class=30"], ["data.val_per_class", "class 0 has 20 images"]),
        (8, ["data.padding=9"], ["data.padding=9", "8x8 images"]),
        (8, ["train.batch_size=64"], ["train.batch_size=64", "36 training images"]),
    ],
    ids=[
        "images-too-small",
        "train-size-too-large",
        "val-too-large",
        "padding-too-large",
        "batch-too-large",
    ],
)
def test_data_that_does_not_fit_the_config_is_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    size: int,
    overrides: list[str],
    fragments: list[str],
) -> None:
    """A dataset the config cannot use (images smaller than the network takes, fewer training
    images than data.train_size or the batch, too few per class for the validation split, a
    padding larger than the images) stops ``phaseguard train`` in one line naming the setting
    and both numbers, not a shape traceback mid-training."""
    data = tmp_path / "d.npz"
    np.savez(data, **npz_arrays(40, size))
    config = train_config(tmp_path / "c.yaml", data, *overrides)
    one_error(capsys, ["train", config, "--out", tmp_path / "run"], *fragments)


def test_models_say_which_image_sizes_they_take() -> None:
    """check_input_size, the build-time check, refuses images smaller than a model takes (the
    small CNN's two 2x2 pools need 4x4, also inside a normalizing wrapper) in one ModelError
    line, and passes sizes it takes: the ResNets take even 1x1 images."""
    from phaseguard.errors import ModelError
    from phaseguard.models import check_input_size, create_model

    small = create_model("smallcnn", 2, 1, normalize=([0.5], [0.5]), width=2)
    check_input_size(small, (1, 4, 4), "smallcnn")
    with pytest.raises(
        ModelError, match="model smallcnn needs images of at least 4x4 pixels; these are 3x8"
    ):
        check_input_size(small, (1, 3, 8), "smallcnn")
    check_input_size(create_model("resnet18", 2, 3), (3, 1, 1), "resnet18")


# --- Unicode and spaces in paths ------------------------------------------------------------------


def test_unicode_and_spaces_in_paths_just_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config file, the file its ``base:`` names, a dataset root and a run folder whose paths
    hold spaces and non-ASCII characters (accents, CJK, an emoji) are read and written like any
    other: the config shows, the dataset loads and a one-epoch run trains."""
    home = tmp_path / "dossier données 数据 ☃"
    home.mkdir()
    data = home / "jeu d'images é.npz"
    np.savez(data, **npz_arrays())
    train_config(home / "base ü.yaml", data)
    child = home / "config 設定 ✓.yaml"
    child.write_text(
        "# commentaire: réglage ☃\nbase: base ü.yaml\ntrain:\n  seed: 7\n", encoding="utf-8"
    )
    rc, out, err = run_cli(capsys, "config", "show", child)
    assert rc == 0 and err == "", err
    assert yaml.safe_load(out)["data"]["root"] == str(data)
    rc, out, err = run_cli(capsys, "data", "info", "npz", "--root", data)
    assert rc == 0 and "40 train / 10 test images of shape (1, 8, 8), 2 classes" in out, err
    idx_dir = home / "mnist ñ"
    idx_dir.mkdir()
    for name, raw in idx_files().items():
        (idx_dir / name).write_bytes(raw)
    rc, out, err = run_cli(capsys, "data", "info", "mnist", "--root", idx_dir)
    assert rc == 0 and "40 train" in out, err
    run = home / "exécution 1"
    rc, out, err = run_cli(capsys, "train", child, "--out", run)
    assert rc == 0, err
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.pt").is_file()
