"""Precision and memory layout of one training iteration: fp32 / bf16 autocast x NCHW /
channels_last (and torch.compile on request), interleaved in one run so the defaults are chosen
from numbers.

    python -m benchmarks.bench_precision [--model smallcnn] [--method pgd_at] [--batch 128]
                                          [--iters 3] [--repeats 3] [--threads 2] [--compile]
                                          [--precisions fp32,bf16] [--width W] [--device cpu]

Each variant runs the method's ``TrainingStep`` on the same real images; the table gives the
median seconds per iteration, the speed-up over the first variant (fp32 NCHW), the first call's
seconds (for compiled variants: compilation) and the peak memory of one iteration. The header
names the CPU (or GPU), whether it computes bf16 natively (the probe behind
``train.precision: auto``) and what ``auto`` resolves to there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import images, method_step, peak_memory_mb, synchronize, timed
from phaseguard.config import Config
from phaseguard.hardware import device_name, native_bf16
from phaseguard.models import create_model
from phaseguard.training.precision import resolve_speed_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smallcnn")
    parser.add_argument("--method", default="pgd_at")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--width", type=int, help="the small net's width (default 32)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, y = images(args.model, args.batch, device)
    names = [
        (p, cl, c)
        for c in ([False, True] if args.compile else [False])
        for p in args.precisions.split(",")
        for cl in (False, True)
    ]
    kwargs = {"width": args.width} if args.width else {}
    steps = {n: method_step(args.model, {"name": args.method}, x, y, *n, **kwargs) for n in names}
    first: dict[tuple, float] = {}
    for n, step in steps.items():  # warm-up (and compilation)
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        first[n] = time.perf_counter() - start
    times: dict[tuple, list[float]] = {n: [] for n in names}
    for _ in range(args.repeats):
        for n, step in steps.items():
            times[n].append(timed(step, args.iters, device))
    peak = {n: peak_memory_mb(step, device) for n, step in steps.items()}
    base = statistics.median(times[names[0]])
    net = create_model(args.model, 10, x.shape[1], **kwargs)
    _, auto, _ = resolve_speed_settings(Config(), device, net)
    print(
        f"{device_name(device)}: native bf16 {native_bf16(device)}; auto: {', '.join(auto)}\n"
        f"{args.method}, {args.model} {kwargs or ''}, batch {args.batch}, {device}, "
        f"{args.threads} threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"{'precision':<10}{'layout':<15}{'compile':<9}{'s/iter':>8}{'speed-up':>10}"
        f"{'first s':>9}{'peak MiB':>10}"
    )
    for (p, cl, c), values in times.items():
        t = statistics.median(values)
        layout = "channels_last" if cl else "NCHW"
        print(
            f"{p:<10}{layout:<15}{'yes' if c else 'no':<9}{t:>8.3f}{base / t:>10.2f}"
            f"{first[(p, cl, c)]:>9.1f}{peak[(p, cl, c)]:>10.0f}"
        )


if __name__ == "__main__":
    main()
