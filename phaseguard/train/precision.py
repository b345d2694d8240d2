"""Mixed precision: bf16 autocast (CPU and CUDA), fp16 autocast with a gradient scaler (CUDA)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import ConfigError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs CUDA; use bf16 on CPU")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast for ``precision`` ("fp32" runs as is)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=_DTYPES[precision]):
        yield


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
