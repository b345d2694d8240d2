"""Fingerprints of the weights that short fixed-seed fp32 CPU runs end with, one per method.

A refactor or speed-up of a method, an attack or the trainer must leave these unchanged (a change
of behaviour is a new option, default off)::

    python -m benchmarks.weight_hashes --compare benchmarks/weight_hashes.json
    python -m benchmarks.weight_hashes --record benchmarks/weight_hashes.json  # add this CPU kind

Each case trains 2 epochs of 384 real Fashion-MNIST images (small net, width 8, batch 64) in
fp32, NCHW, 2 threads, seed 0, and hashes (SHA-256) every tensor of the last checkpoint: the
classifier, its averaged copy, the method's trainables (DAT's generator and its optimiser).
fp32 kernels differ between CPU kinds (AVX2, AVX-512, AMX), so hashes are comparable only
between runs on one kind: the file holds one entry per kind (CPU name and ATen's vector
capability), and ``--compare`` uses this machine's, or says that there is none.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from phaseguard.checkpoint import load_checkpoint
from phaseguard.config import load_config
from phaseguard.hardware import cpu_name
from phaseguard.training import train

BASE = [
    "data.name=fashion-mnist",
    "data.train_size=384",
    "data.val_per_class=4",
    "model.name=smallcnn",
    "model.kwargs.width=8",
    "attack.eps=0.1",
    "attack.step=0.05",
    "attack.steps=2",
    "schedule.name=onecycle",
    "optim.lr=0.05",
    "train.epochs=2",
    "train.batch_size=64",
    "train.val_attack_steps=2",
    "train.progress=false",
    "train.threads=2",
    "train.precision=fp32",
    "train.channels_last=false",
]
DAT = ["method.name=dat", "method.eaeg_steps=2"]
CASES: dict[str, list[str]] = {
    "standard": ["method.name=standard"],
    "pgd_at": ["method.name=pgd_at"],
    "trades": ["method.name=trades"],
    "mart": ["method.name=mart"],
    "dat": DAT,
    "dat_joint": [*DAT, "method.generator_update=joint"],
    "dat_awp": [*DAT, "awp.enabled=true"],
    "dat_ema": [*DAT, "averaging.name=ema", "averaging.ema_decay=0.9"],
    # the paper's ablations and the reference's BN updates
    "dat_no_js": [*DAT, "method.js=false"],
    "dat_eaeg_only": [*DAT, "method.mixed_branch=false"],
    "dat_no_mixup": [*DAT, "method.mixup=false"],
    "dat_random": [*DAT, "method.amplitude=random"],
    "dat_ref_bn": [*DAT, "method.reference_bn_updates=true"],
}


def tensors_digest(tree: object, h: hashlib._Hash | None = None) -> str:
    """SHA-256 over every tensor in a nested dict/list (keys sorted), names and bytes."""
    h = h or hashlib.sha256()
    if isinstance(tree, dict):
        for key in sorted(tree, key=str):
            h.update(str(key).encode())
            tensors_digest(tree[key], h)
    elif isinstance(tree, list | tuple):
        for item in tree:
            tensors_digest(item, h)
    elif isinstance(tree, torch.Tensor):
        h.update(tree.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_case(overrides: list[str], out: Path) -> str:
    train(load_config(None, [*BASE, *overrides]), out)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    return tensors_digest({k: state[k] for k in ("model", "eval_model", "method")})


def cpu_kind() -> str:
    """This machine's entry in the hashes file: CPU name and ATen's vector capability."""
    return f"{cpu_name()} ({torch.backends.cpu.get_cpu_capability()})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="hashes file whose entry for this CPU kind to check")
    parser.add_argument("--record", help="hashes file to add (or replace) this CPU kind's entry in")
    parser.add_argument("--cases", help="comma-separated subset of: " + ",".join(CASES))
    args = parser.parse_args()
    names = args.cases.split(",") if args.cases else list(CASES)
    kind = cpu_kind()
    hashes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            hashes[name] = run_case(CASES[name], Path(tmp) / name)
            print(f"{name:<14} {hashes[name]}", flush=True)
    if args.record:
        path = Path(args.record)
        kinds = json.loads(path.read_text()) if path.is_file() else {}
        kinds[kind] = {"torch": torch.__version__, "hashes": hashes}
        path.write_text(json.dumps(kinds, indent=2, sort_keys=True) + "\n")
    if not args.compare:
        return 0
    before = json.loads(Path(args.compare).read_text()).get(kind)
    if before is None or before["torch"] != torch.__version__:
        print(f"cannot compare: no entry for {kind} with torch {torch.__version__}")
        return 2
    recorded = [n for n in names if n in before["hashes"]]
    changed = [n for n in recorded if before["hashes"][n] != hashes[n]]
    missing = sorted(set(names) - set(recorded))
    print("all identical" if not changed else f"CHANGED: {', '.join(changed)}")
    if missing:
        print(f"not recorded for this CPU kind: {', '.join(missing)}")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
