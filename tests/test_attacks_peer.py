"""Our PGD against an independent implementation (torchattacks) on real models and real images.

The two must agree on robust accuracy within one image in a hundred. Both draw their random start
the same way (``uniform_(-eps, eps)`` on a tensor shaped like x, from the global generator), so
with the same seed they start from the same points: a disagreement means a difference in the
algorithm (loss, step, projection, clipping), not in luck.

- Fashion-MNIST: the smallcnn trained by ``test_attacks``, 200 test images, PGD-20 at eps 0.1.
- CIFAR-10: the trained ResNet-18 that ships with ``pyautoattack`` (its ``examples/model_test.pt``,
  a standard non-robust model, loaded with ``weights_only=True`` into AutoAttack's own example
  architecture) on the 20 real CIFAR-10 test images that ship with ``foolbox`` (PNG files in its
  ``data`` folder; foolbox itself is not imported). eps = 1/255: at the protocol's 8/255 a
  non-robust model has 0% robust accuracy under both, which would compare nothing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from test_attacks import correct, one_thread, trained_smallcnn  # noqa: F401 (fixture)
from torch import Tensor, nn

from phaseguard.attacks import PGD

torchattacks = pytest.importorskip(
    "torchattacks", reason="torchattacks (peer PGD) is not installed: pip install --no-deps"
)


def robust_counts(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int
) -> tuple[int, int]:
    """Images still correct after our PGD and after torchattacks' PGD, same seed and settings."""
    torch.manual_seed(0)
    ours = correct(model, PGD(model, eps, eps / 4, steps)(x, y), y)
    torch.manual_seed(0)
    theirs = correct(model, torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=steps)(x, y), y)
    return int(ours.sum()), int(theirs.sum())


def test_pgd_matches_torchattacks_on_fashion_mnist() -> None:
    model, x, y = trained_smallcnn()
    ours, theirs = robust_counts(model, x, y, eps=0.1, steps=20)
    clean = int(correct(model, x, y).sum())
    assert 0 < ours < clean
    assert abs(ours - theirs) <= len(y) // 100, (ours, theirs)


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        pytest.skip(f"{name} is not installed (pip install --no-deps {name})")
    return Path(spec.origin).parent


def cifar10_samples() -> tuple[Tensor, Tensor]:
    """foolbox's 20 CIFAR-10 test images: float [20, 3, 32, 32] in [0, 1], int64 labels [20]."""
    from PIL import Image

    files = sorted((package_dir("foolbox") / "data").glob("cifar10_*.png"))
    assert len(files) == 20, files
    images = [np.array(Image.open(f).convert("RGB")) for f in files]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
    return x, y


def autoattack_resnet18() -> nn.Module:
    """The CIFAR-10 ResNet-18 checkpoint shipped with pyautoattack, in eval mode."""
    checkpoint = package_dir("pyautoattack") / "examples" / "model_test.pt"
    from pyautoattack.examples.resnet import ResNet18

    model = ResNet18()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def test_pgd_matches_torchattacks_on_cifar10_resnet18() -> None:
    x, y = cifar10_samples()
    model = autoattack_resnet18()
    clean = int(correct(model, x, y).sum())
    assert clean >= 18  # a trained model, loaded correctly
    ours, theirs = robust_counts(model, x, y, eps=1 / 255, steps=5)
    assert 0 < ours < clean
    assert abs(ours - theirs) <= len(y) // 100, (ours, theirs)
