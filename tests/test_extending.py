"""docs/extending.md as a user runs it: its code, from a folder outside the repository, registers
a dataset, a training method with a trainable module of its own, an image attack and an
evaluation attack, then trains and evaluates with them."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import torch

from phaseguard.checkpoint import load_checkpoint

PAGE = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_the_extending_page_runs_and_its_entries_work_like_built_in_ones(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 4
    script = tmp_path / "mine.py"
    script.write_text("\n".join(blocks))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]

    scores = dict(re.findall(r"^(\w+)\s+([\d.]+)%$", done.stdout, flags=re.M))
    natural, noise, pgd = (float(scores[k]) for k in ("natural", "noise", "pgd20"))
    assert natural > 70  # three classes, two short epochs: far above chance (33%)
    assert pgd <= noise <= natural  # the registered black-box attack is checked like any other
    assert "noise does not help the model" in done.stdout

    run = tmp_path / "runs" / "universal"
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    # the trainer stepped and checkpointed the method's own module with its optimiser
    assert set(state["method"]) == {"perturbation", "perturbation_optimizer"}
    raw = state["method"]["perturbation"]["raw"]
    assert raw.abs().max() > 0 and raw.shape == torch.Size([1, 28, 28])
    with (run / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and all(float(r["train_perturbation_loss"]) > 0 for r in rows)
