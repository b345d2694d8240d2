"""The README's "A training method in your own loop", run exactly as written from a folder outside
the repository, and create_method's checks."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from phaseguard.errors import ConfigError
from phaseguard.methods import create_method
from phaseguard.models import convert_split_bn

README = Path(__file__).resolve().parents[1] / "README.md"


def _section_code(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_readme_own_loop_trains_dat_and_its_generator(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(_section_code("### A training method in your own loop"))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    epochs = re.findall(r"^epoch (\d): loss ([\d.]+), acc on x' ([\d.]+)$", done.stdout, re.M)
    assert [e[0] for e in epochs] == ["1", "2"], done.stdout
    losses = [float(e[1]) for e in epochs]
    assert all(math.isfinite(v) for v in losses) and losses[1] < losses[0]


def _small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))


def test_create_method_asks_for_split_bn_and_checks_options():
    model = _small_net()
    model(torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="convert_split_bn"):
        create_method("dat", model, num_classes=10, image_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match="beta_typo"):
        create_method("trades", model, num_classes=10, image_shape=(1, 8, 8), beta_typo=1.0)
    dat = create_method(
        "dat", convert_split_bn(model), num_classes=10, image_shape=(1, 8, 8), beta=3.0
    )
    assert dat.options.beta == 3.0 and "generator" in dat.trainables()
