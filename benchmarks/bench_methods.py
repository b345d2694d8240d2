"""Cost of one training iteration of every method, as ratios to PGD-AT-10 measured in the same run.

    python -m benchmarks.bench_methods [--model resnet18] [--batch 128] [--precision fp32]
                                       [--iters 2] [--repeats 3] [--threads 2] [--device cpu]

Every method runs ``phaseguard.training.step.TrainingStep`` (exactly what training runs) on the
same model architecture, the same real Fashion-MNIST images (tiled to 3x32x32 for the CIFAR
models), batch and precision; methods are interleaved over ``--repeats`` rounds and the median
seconds per iteration are reported. Attack settings: eps 8/255, step 2/255, 10 steps for
PGD-AT/TRADES/MART, DAT's EAEG 5 steps (docs/dat.md section 4).

Efficiency: the time an iteration's forward and backward passes need on their own, from the
pass counts below and a timed forward, input-only backward and training forward+backward of the
model, divided by the measured time (1.0: no overhead beyond the passes).

Peak memory: what one iteration allocates above the resting state (weights, gradients,
optimiser state), measured in a separate untimed iteration (``benchmarks.common.peak_memory_mb``).
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from benchmarks.common import images, method_step, peak_memory_mb, timed
from phaseguard.models import create_model
from phaseguard.training.precision import autocast

K_PGD, K_EAEG = 10, 5

# (label, method section, passes): passes in units of
#   g: forward without graph; a: attack step (forward with graph + input-only backward);
#   t: training forward + backward with weight gradients.
METHODS: list[tuple[str, dict, dict[str, int]]] = [
    ("standard", {"name": "standard"}, {"t": 1}),
    ("pgd_at", {"name": "pgd_at"}, {"a": K_PGD, "t": 1}),
    ("trades", {"name": "trades"}, {"g": 1, "a": K_PGD, "t": 2}),
    ("mart", {"name": "mart"}, {"a": K_PGD, "t": 2}),
    # logits for G, 2 x (clean target + K steps), 4 training branches, generator step:
    # p(x) without graph + x_hat, x_hat' forward and input-only backward
    ("dat", {"name": "dat"}, {"g": 4, "a": 2 * K_EAEG + 2, "t": 4}),
    ("dat joint", {"name": "dat", "generator_update": "joint"}, {"g": 3, "a": 2 * K_EAEG, "t": 4}),
    # the classifier's loss back-propagated at once (four branch graphs alive), not in pieces
    ("dat 1-bwd", {"name": "dat"}, {"g": 4, "a": 2 * K_EAEG + 2, "t": 4}),
    (
        "dat ref-bn",
        {"name": "dat", "reference_bn_updates": True},
        {"g": 5, "a": 2 * K_EAEG + 2, "t": 4},
    ),
]


def unit_passes(model: str, x, y, precision: str, iters: int) -> dict[str, float]:
    """Seconds of one forward without graph (g), one attack step (a), one training step (t)."""
    torch.manual_seed(0)
    net = create_model(model, 10, x.shape[1]).to(x.device)
    params = list(net.parameters())

    def g():
        net.eval()
        with torch.no_grad(), autocast(precision, x.device):
            net(x)

    def a():
        net.eval()
        for p in params:
            p.requires_grad_(False)
        xi = x.clone().requires_grad_(True)
        with autocast(precision, x.device):
            loss = F.cross_entropy(net(xi).float(), y)
        torch.autograd.grad(loss, xi)
        for p in params:
            p.requires_grad_(True)

    def t():
        net.train()
        with autocast(precision, x.device):
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()

    out = {}
    for name, fn in (("g", g), ("a", a), ("t", t)):
        fn()
        out[name] = timed(fn, iters * 3, x.device)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--iters", type=int, default=2, help="iterations per timing")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", help="comma-separated labels (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, y = images(args.model, args.batch, device)
    chosen = [m for m in METHODS if not args.methods or m[0] in args.methods.split(",")]
    steps = {
        label: method_step(
            args.model, section, x, y, args.precision, one_backward=label.endswith("1-bwd")
        )
        for label, section, _ in chosen
    }
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.repeats):
        for label, step in steps.items():
            times[label].append(timed(step, args.iters, device))
    peak = {label: peak_memory_mb(step, device) for label, step in steps.items()}
    units = unit_passes(args.model, x, y, args.precision, args.iters)
    median = {label: statistics.median(v) for label, v in times.items()}
    base = median.get("pgd_at")
    print(
        f"model {args.model}, batch {args.batch}, {args.precision}, {device}, "
        f"{args.threads} threads; "
        f"passes: forward {units['g'] * 1e3:.0f} ms, attack step {units['a'] * 1e3:.0f} ms, "
        f"training fwd+bwd {units['t'] * 1e3:.0f} ms"
    )
    print(
        f"{'method':<12}{'s/iter':>9}{'img/s':>8}{'x PGD-AT':>10}{'passes s':>10}{'effic.':>8}"
        f"{'peak MiB':>10}"
    )
    for label, _, passes in chosen:
        floor = sum(units[k] * n for k, n in passes.items())
        ratio = f"{median[label] / base:.2f}" if base else "-"
        print(
            f"{label:<12}{median[label]:>9.3f}{args.batch / median[label]:>8.0f}{ratio:>10}"
            f"{floor:>10.3f}{floor / median[label]:>8.2f}{peak[label]:>10.0f}"
        )


if __name__ == "__main__":
    main()
