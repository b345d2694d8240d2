"""Time PGD evaluation: phaseguard's PGD against torchattacks' PGD, same model and same data.

    python benchmarks/bench_eval.py [--model smallcnn|resnet18] [--n 512] [--batch 256]
                                    [--steps 20] [--eps EPS] [--repeats 3]

- smallcnn: phaseguard's smallcnn trained for a few seconds on 2000 Fashion-MNIST images, then
  evaluated on the first n test images (eps 0.1 by default).
- resnet18: phaseguard's resnet18 with the trained CIFAR-10 weights that ship with pyautoattack
  (``examples/model_test.pt``, same layers in the same order), on the 20 CIFAR-10 test images
  that ship with foolbox, repeated up to n (eps 8/255 by default).

Each repeat runs both evaluations (PGD with step eps/4 and a random start, then a forward) back
to back, alternating which goes first, from the same seed; the script prints the median seconds
of each, the ratio ours/theirs and both robust accuracies. Needs torchattacks
(``pip install --no-deps torchattacks``), and pyautoattack and foolbox for resnet18.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from phaseguard.attacks import PGD
from phaseguard.config import load_config
from phaseguard.data import load_dataset
from phaseguard.loading import load_model
from phaseguard.models import create_model
from phaseguard.training import train

Attack = Callable[[Tensor, Tensor], Tensor]


def fashion_mnist_smallcnn(n: int) -> tuple[nn.Module, Tensor, Tensor]:
    """smallcnn trained (phaseguard's trainer, clean CE) 2 epochs on 2000 Fashion-MNIST
    images; the first n test images in [0, 1]."""
    cfg = load_config(
        None,
        [
            "data.train_size=2000",
            "model.name=smallcnn",
            "method.name=standard",
            "schedule.name=onecycle",
            "train.epochs=2",
            "train.progress=false",
        ],
    )
    with tempfile.TemporaryDirectory() as run:
        train(cfg, run)
        model = load_model(run, "last").model
    data = load_dataset("fashion-mnist")
    return model, data.x_test[:n].float() / 255, data.y_test[:n]


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"--model resnet18 needs {name}: pip install --no-deps {name}")
    return Path(spec.origin).parent


def cifar10_resnet18(n: int) -> tuple[nn.Module, Tensor, Tensor]:
    """phaseguard's resnet18 with pyautoattack's CIFAR-10 weights; foolbox's images up to n."""
    from PIL import Image

    model = create_model("resnet18", 10, 3)
    weights = torch.load(
        _package_dir("pyautoattack") / "examples" / "model_test.pt",
        map_location="cpu",
        weights_only=True,
    )
    own = model.state_dict()
    if [t.shape for t in own.values()] != [t.shape for t in weights.values()]:
        raise SystemExit("pyautoattack's checkpoint does not match phaseguard's resnet18")
    model.load_state_dict(dict(zip(own, weights.values())))
    files = sorted((_package_dir("foolbox") / "data").glob("cifar10_*.png"))
    images = np.stack([np.array(Image.open(f).convert("RGB")) for f in files])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
    reps = -(-n // len(y))
    return model.eval(), x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]


def evaluate(
    model: nn.Module, attack: Attack, x: Tensor, y: Tensor, batch: int
) -> tuple[float, float]:
    """(seconds, robust accuracy) of attacking then classifying x in batches."""
    torch.manual_seed(0)
    correct = 0
    start = time.perf_counter()
    for xb, yb in zip(x.split(batch), y.split(batch)):
        x_adv = attack(xb, yb)
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return time.perf_counter() - start, correct / len(y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["smallcnn", "resnet18"], default="smallcnn")
    parser.add_argument("--n", type=int, default=512, help="images to evaluate")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eps", type=float, default=None, help="default 0.1 / 8/255")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torchattacks

    load = fashion_mnist_smallcnn if args.model == "smallcnn" else cifar10_resnet18
    model, x, y = load(args.n)
    eps = args.eps if args.eps is not None else (0.1 if args.model == "smallcnn" else 8 / 255)
    attacks: dict[str, Attack] = {
        "phaseguard": PGD(model, eps, eps / 4, args.steps),
        "torchattacks": torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=args.steps),
    }
    evaluate(model, attacks["phaseguard"], x[:8], y[:8], args.batch)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in attacks}
    accuracy: dict[str, float] = {}
    for r in range(args.repeats):
        for name in list(attacks)[:: 1 if r % 2 == 0 else -1]:
            seconds, accuracy[name] = evaluate(model, attacks[name], x, y, args.batch)
            times[name].append(seconds)
    print(
        f"PGD-{args.steps} eval, {args.model}, n={len(y)}, batch={args.batch}, eps={eps:.4g}, "
        f"{args.repeats} repeats, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    median = {name: statistics.median(t) for name, t in times.items()}
    for name in attacks:
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(
            f"{name:>13}: median {median[name]:.2f} s ({runs}); "
            f"robust accuracy {100 * accuracy[name]:.2f}%"
        )
    print(f"ratio ours/theirs: {median['phaseguard'] / median['torchattacks']:.3f}")


if __name__ == "__main__":
    main()
