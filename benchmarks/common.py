"""What the benchmark scripts share: real images, one method's training step, timing, memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from phaseguard.build import build_method, build_model
from phaseguard.config import AttackConfig, Config, ModelConfig
from phaseguard.cpu_memory import keep_freed_memory
from phaseguard.data import load_dataset
from phaseguard.methods import Method
from phaseguard.training.step import TrainingStep

# Benchmarks time what the phaseguard command runs, which keeps freed memory for reuse
# (PHASEGUARD_SYSTEM_MALLOC=1 measures the C library's defaults instead).
keep_freed_memory()

# Attack settings of every benchmark: eps 8/255, step 2/255, 10 steps (DAT's EAEG: its 5).
ATTACK = AttackConfig(eps=8 / 255, step=2 / 255, steps=10)


def images(
    model: str, batch: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` real Fashion-MNIST training images in [0, 1] ([B,1,28,28] for the small net;
    padded and tiled to [B,3,32,32] for the CIFAR models) and their labels."""
    ds = load_dataset("fashion-mnist")
    x = ds.x_train[:batch].float() / 255
    if model != "smallcnn":
        x = F.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
    return x.to(device), ds.y_train[:batch].to(device)


def method_step(
    model: str,
    section: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str = "fp32",
    channels_last: bool = False,
    compiled: bool = False,
    one_backward: bool = False,
    **model_kwargs: object,
) -> Callable[[], object]:
    """One training iteration of the method ``section`` (``TrainingStep``, what training runs)
    on a fresh model (seed 0) of architecture ``model``, on the device of ``x``.
    ``one_backward``: one backward of the whole loss (``Method.loss_and_backward``'s default)
    even where the method takes it in pieces (DAT), to measure what the pieces save.
    ``model_kwargs`` go to the model's builder (e.g. ``width`` of the small net)."""
    cfg = Config(model=ModelConfig(name=model, kwargs=model_kwargs), attack=ATTACK, method=section)
    torch.manual_seed(0)
    net = build_model(cfg, 10, x.shape[1]).to(x.device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    net_or_compiled = torch.compile(net) if compiled else net  # as the trainer: attacks too
    method = build_method(cfg, net_or_compiled, 10, tuple(x.shape[1:]))
    if one_backward:
        method.loss_and_backward = partial(Method.loss_and_backward, method)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    step = TrainingStep(method, net_or_compiled, optimizer, precision, x.device)
    net.train()
    return lambda: step(x, y)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], iters: int, device: torch.device) -> float:
    """Mean seconds of ``iters`` calls (CUDA work waited for)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / iters


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory one call of ``fn`` allocates above what was allocated before it, in MiB.

    CUDA: the caching allocator's peak statistics. CPU: the profiler's allocation events
    (``profile_memory``), summed in time order; slow, so call it outside timed regions.
    """
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20
