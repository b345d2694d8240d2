"""The tiny studies the study tests run (tests/test_study*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import TINY

#: The config file of each method of :func:`write_study` by default.
METHODS = {"pgd_at": {"method": {"name": "pgd_at"}}, "dat": {"method": {"name": "dat"}}}


def write_study(
    folder: Path,
    ablations: bool = True,
    epochs: int = 1,
    seeds: tuple[int, ...] = (0, 1),
    methods: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """``folder/study.yaml``: the tiny config (tests/conftest.py) trained for ``epochs`` with
    each of ``methods`` (name -> its config file's content, written as ``NAME.yaml``) and
    ``seeds``, DAT's ``no_js`` ablation when ``ablations``; evaluated with natural and PGD-20
    on 48 images, analyzed on 48."""
    methods = METHODS if methods is None else methods
    for name, tree in methods.items():
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(tree))
    spec = {
        "methods": {name: f"{name}.yaml" for name in methods},
        "seeds": list(seeds),
        "overrides": [
            *[o for o in TINY if not o.startswith(("method.", "train.epochs"))],
            f"train.epochs={epochs}",
        ],
        "eval": {"attacks": ["natural", "pgd20"], "n": 48},
        "analyze": {"n": 48},
    }
    if ablations:
        spec["ablations"] = {"ablation_of": "dat", "runs": {"no_js": ["method.js=false"]}}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path
