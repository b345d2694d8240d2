"""The wheel as a researcher installs it: built from this tree, installed into a fresh virtual
environment, and run from an empty folder with no source checkout in sight.

The environment borrows the packages of the one running the tests (torch and the rest, through a
path file) without its phaseguard: only the wheel's copy is importable, which the test checks.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path
from shutil import ignore_patterns

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str | Path, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_installed_wheel_trains_evaluates_and_plans_a_study_without_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy: building in the tree would leave build/ there, stale later
    shutil.copytree(ROOT / "phaseguard", src / "phaseguard", ignore=ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src)
    dist = tmp_path / "dist"
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src, cwd=tmp_path)
    (wheel,) = dist.glob("phaseguard-*.whl")

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
    )
    # the running environment's packages as plain paths: their .pth files (an editable install
    # of phaseguard among them) are not processed, so the wheel's phaseguard is the only one
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(purelib.stdout.strip(), "borrowed.pth").write_text("\n".join(borrowed) + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel, cwd=tmp_path)

    work = tmp_path / "work"  # an empty folder outside the repository
    work.mkdir()
    where = run(python, "-c", "import phaseguard; print(phaseguard.__file__)", cwd=work)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    phaseguard = venv / "bin" / "phaseguard"
    version = run(phaseguard, "--version", cwd=work).stdout.strip()
    assert version == f"phaseguard {wheel.name.split('-')[1]}"

    # the main job, shortened
    train = run(
        phaseguard,
        "train",
        "quick",
        "train.epochs=1",
        "data.train_size=512",
        "data.val_per_class=4",
        "train.progress=false",
        "--out",
        "run",
        cwd=work,
    )
    assert "best validation PGD accuracy" in train.stdout
    evaluated = run(phaseguard, "eval", "run", "--n", "100", "--attacks", "natural,pgd20", cwd=work)
    assert "worst case" in evaluated.stdout and (work / "run" / "eval.json").is_file()

    plan = run(phaseguard, "study", "--preset", "small", "--dry-run", "--out", "study", cwd=work)
    assert "dat_s0: small/fashion_mnist_dat train.seed=0" in plan.stdout.splitlines()
    assert len(plan.stdout.splitlines()) == 17
    assert not (work / "study").exists()
