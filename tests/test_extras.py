"""Optional dependencies: a missing one is one line naming the pip extra to install."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from phaseguard.data import load_dataset
from phaseguard.extras import MissingExtraError, require


def test_require_returns_the_module_or_names_the_extra():
    import json

    assert require("json", "svhn", "the SVHN reader") is json
    with pytest.raises(MissingExtraError) as info:
        require("no_such_package_here.io", "svhn", "the SVHN reader")
    assert str(info.value) == (
        "the SVHN reader needs no_such_package_here: pip install 'phaseguard[svhn]'"
    )


def test_the_svhn_reader_without_scipy_names_the_svhn_extra(tmp_path, monkeypatch):
    scipy_io = pytest.importorskip("scipy.io")
    for split, n in (("train", 3), ("test", 2)):
        x = np.zeros((32, 32, 3, n), dtype=np.uint8)
        y = np.arange(1, n + 1, dtype=np.uint8)[:, None]  # SVHN labels are 1..10
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    assert len(load_dataset("svhn", tmp_path).y_test) == 2
    # as on an install without the extra: importing scipy fails
    for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(MissingExtraError, match=r"^the SVHN reader needs scipy: pip install "):
        load_dataset("svhn", tmp_path)
