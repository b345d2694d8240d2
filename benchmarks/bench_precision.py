"""Precision and memory layout of one training iteration: fp32 / bf16 autocast x NCHW /
channels_last (and torch.compile on request), interleaved in one run so the defaults are chosen
from numbers.

    python -m benchmarks.bench_precision [--model smallcnn] [--method pgd_at] [--batch 128]
                                          [--iters 3] [--repeats 3] [--threads 2] [--compile]

Each variant runs ``training_step`` of the method on the same real images; the table gives the
median seconds per iteration and the speed-up over fp32 NCHW.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_methods import images
from phaseguard.config import AttackConfig
from phaseguard.methods import MethodContext, create_method, method_class, method_options
from phaseguard.models import create_model
from phaseguard.train.precision import make_scaler
from phaseguard.train.trainer import training_step


def variant(
    model_name: str, method: str, x, y, precision: str, channels_last: bool, compiled: bool
):
    section = {"name": method}
    split = method_class(method).wants_split_bn(method_options(section))
    torch.manual_seed(0)
    net = create_model(model_name, 10, x.shape[1], split_bn=split)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model = torch.compile(net) if compiled else net
    ctx = MethodContext(
        model=model,
        net=net,
        attack=AttackConfig(eps=8 / 255, step=2 / 255, steps=10),
        num_classes=10,
        image_shape=tuple(x.shape[1:]),
        device=torch.device("cpu"),
        precision=precision,
    )
    m = create_method(section, ctx)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    scaler = make_scaler(precision, torch.device("cpu"))
    net.train()
    return lambda: training_step(m, model, optimizer, scaler, x, y, precision)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--method", default="pgd_at")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = images(args.model, args.batch)
    names = [
        (p, cl, c)
        for c in ([False, True] if args.compile else [False])
        for p in ("fp32", "bf16")
        for cl in (False, True)
    ]
    steps = {n: variant(args.model, args.method, x, y, *n) for n in names}
    for step in steps.values():  # warm-up (and compilation)
        step()
    times: dict[tuple, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for n, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.iters):
                step()
            times[n].append((time.perf_counter() - start) / args.iters)
    base = statistics.median(times[names[0]])
    print(f"{args.method}, {args.model}, batch {args.batch}, {args.threads} threads")
    print(f"{'precision':<10}{'layout':<15}{'compile':<9}{'s/iter':>8}{'speed-up':>10}")
    for (p, cl, c), values in times.items():
        t = statistics.median(values)
        layout = "channels_last" if cl else "NCHW"
        print(f"{p:<10}{layout:<15}{'yes' if c else 'no':<9}{t:>8.3f}{base / t:>10.2f}")


if __name__ == "__main__":
    main()
