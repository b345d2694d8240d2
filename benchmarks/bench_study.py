"""Wall time of one small study with ``--executor local`` and with ``--executor ray``.

    python -m benchmarks.bench_study [--methods pgd_at,dat] [--seeds 0,1] [--train-size 3000]
                                     [--epochs 2] [--n 500] [--cpus 2]

The same study (the ``small/`` presets' protocol of each method, fewer training images and
epochs; evaluation natural and PGD-20, phase reliance, on the first ``--n`` test images) runs
twice from scratch, each time in a fresh temporary folder and in this process:

- local: :class:`phaseguard.study_executors.LocalExecutor`, the runs one after another, torch's
  threads as the ``phaseguard`` command sets them (every core this process may use);
- ray: a Ray instance started here with ``--cpus`` CPUs, 1 CPU and 1 torch thread per run, so
  ``--cpus`` runs at once (:class:`phaseguard.study_executors.RayExecutor`); its time includes
  starting and stopping Ray.

Prints the CPU, how threads were set, both wall times and the ratio ray / local.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import torch
import yaml

from phaseguard.cpu_memory import keep_freed_memory
from phaseguard.extras import require
from phaseguard.hardware import configure_threads, cpu_name
from phaseguard.study import load_study, run_study
from phaseguard.study_executors import LocalExecutor, RayExecutor


def write_study(folder: Path, args: argparse.Namespace) -> Path:
    """The benchmark's study file in ``folder``."""
    methods = args.methods.split(",")
    tree = {
        "methods": {m: f"small/fashion_mnist_{m}" for m in methods},
        "seeds": [int(s) for s in args.seeds.split(",")],
        "overrides": [
            f"data.train_size={args.train_size}",
            f"train.epochs={args.epochs}",
            "train.progress=false",
        ],
        "eval": {"attacks": ["natural", "pgd20"], "n": args.n},
        "analyze": {"n": args.n},
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def timed_study(study: Path, executor: LocalExecutor | RayExecutor, cpus: int) -> float:
    """Seconds of the whole study with ``executor`` in a fresh folder (for Ray: with starting a
    local instance of ``cpus`` CPUs and shutting it down)."""
    with tempfile.TemporaryDirectory(prefix="bench_study_") as out:
        start = time.perf_counter()
        ray = None
        if isinstance(executor, RayExecutor):
            ray = require("ray", "ray", "benchmarks.bench_study")
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the runs' epoch lines
                run_study(load_study(study), out, log=lambda line: None, executor=executor)
        finally:
            if ray is not None:
                ray.shutdown()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="pgd_at,dat", help="small/ presets (pgd_at,dat)")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--train-size", type=int, default=3000, help="training images (3000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n", type=int, default=500, help="test images of eval and analyze")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the Ray instance (2)")
    args = parser.parse_args()
    keep_freed_memory()
    with tempfile.TemporaryDirectory(prefix="bench_study_") as folder:
        study = write_study(Path(folder), args)
        runs = len(load_study(study).runs)
        threads = configure_threads()  # as the phaseguard command, before the local study
        local = timed_study(study, LocalExecutor(), args.cpus)
        ray = timed_study(study, RayExecutor(cpus_per_run=1), args.cpus)
    print(
        f"CPU: {cpu_name()}; torch {torch.__version__}; study: {args.methods} x seeds "
        f"{args.seeds} ({runs} runs), {args.train_size} training images, {args.epochs} epochs, "
        f"eval natural + PGD-20 and analyze on {args.n} images"
    )
    print(f"local: one run after another, {threads}: {local:.1f} s")
    print(f"ray:   {args.cpus} CPUs, 1 CPU and 1 torch thread per run: {ray:.1f} s")
    print(f"ray / local: {ray / local:.2f}")


if __name__ == "__main__":
    main()
