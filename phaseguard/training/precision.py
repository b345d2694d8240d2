"""Mixed precision and memory layout: chosen from the hardware, then bf16 autocast (CPU and
CUDA) or fp16 autocast with a gradient scaler (CUDA).

``train.precision: auto`` (the default) resolves to bf16 where the device computes bf16
natively (:func:`phaseguard.hardware.native_bf16`), to fp16 with the gradient scaler on CUDA
GPUs without it, and to fp32 everywhere else. ``train.channels_last: auto`` resolves, on CPU, to
channels_last when every convolution of the model has at least :data:`MIN_CHANNELS_LAST` output
channels, NCHW otherwise: oneDNN's channels_last kernels vectorise over channels, and measured
training iterations (benchmarks/README.md) were 1.04-1.49x faster in channels_last for nets
whose narrowest convolution has 16 to 64 channels (the small net at widths 16 and 32, ResNet-18),
and 0.91-1.04x as fast (on par in fp32, slower in bf16) for the small net at width 8, on an AMX
CPU and with oneDNN limited to AVX2. On CUDA it resolves to channels_last under autocast (tensor
cores work in NHWC), NCHW for fp32 (not measured here). The run writes the resolved values into
its ``config.yaml``, so a resumed run keeps them on any machine. Evaluation always runs in fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError
from ..hardware import native_bf16

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Output channels every convolution needs for ``channels_last: auto`` to choose it on CPU.
MIN_CHANNELS_LAST = 16


@dataclass(frozen=True)
class Resolved:
    """A setting as the run uses it, and why (printed at the start of a run)."""

    value: str | bool
    reason: str


def resolve_precision(requested: str, device: torch.device) -> Resolved:
    """The precision ``requested`` ("auto", "fp32", "bf16", "fp16") means on ``device``.

    An explicit bf16 where it is not native still resolves to bf16 (:func:`emulation_warning`
    says what it costs).
    """
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs CUDA; use auto, bf16 or fp32 on CPU")
    if requested != "auto":
        return Resolved(requested, "as configured")
    where = "this CPU" if device.type == "cpu" else f"this {device.type} device"
    if native_bf16(device):
        return Resolved("bf16", f"native bf16 on {where}")
    if device.type == "cuda":
        return Resolved("fp16", "no native bf16 on this GPU: fp16 with a gradient scaler")
    return Resolved("fp32", f"no native bf16 on {where}")


def emulation_warning(precision: str, device: torch.device) -> str | None:
    """One line when an explicit bf16 runs where bf16 is emulated, else None."""
    if precision != "bf16" or native_bf16(device):
        return None
    if device.type == "cpu":
        return (
            "train.precision=bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX): "
            "autocast emulates it, about 10x slower than fp32; use auto or fp32"
        )
    return f"train.precision=bf16 is emulated on this {device.type} device and runs slowly"


def narrowest_convolution(model: nn.Module) -> int | None:
    """The fewest output channels of any 2-d convolution in ``model`` (None: it has none)."""
    return min((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=None)


def resolve_channels_last(
    requested: str | bool, device: torch.device, precision: str, model: nn.Module
) -> Resolved:
    """Whether the model and batches use channels_last: ``requested`` when true or false, and
    for "auto" the layout measured or documented faster for ``model`` (see the module)."""
    if requested != "auto":
        return Resolved(bool(requested), "as configured")
    if device.type == "cpu":
        narrowest = narrowest_convolution(model)
        if narrowest is None:
            return Resolved(False, "no convolutions")
        if narrowest < MIN_CHANNELS_LAST:
            return Resolved(False, f"convolutions of {narrowest} channels are no faster in it")
        return Resolved(True, f"convolutions of >= {MIN_CHANNELS_LAST} channels on CPU")
    if device.type == "cuda":
        if precision in _DTYPES:
            return Resolved(True, f"tensor cores under {precision}")
        return Resolved(False, "fp32 on CUDA")
    return Resolved(False, f"{device.type} device")


#: The settings ``auto`` resolves, as written into a run's config.yaml.
AUTO_FIELDS = ("precision", "channels_last")


def adopt_resolved(cfg: Config, stored: Config) -> Config:
    """``cfg`` with each of its :data:`AUTO_FIELDS` that says "auto" taken from ``stored`` (the
    config a run wrote when it started): a resumed run keeps what it resolved to."""
    kept = {f: getattr(stored.train, f) for f in AUTO_FIELDS if getattr(cfg.train, f) == "auto"}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **kept))


def resolve_speed_settings(
    cfg: Config,
    device: torch.device,
    model: nn.Module,
    stored: Config | None = None,
) -> tuple[Config, list[str], str | None]:
    """``cfg`` with precision and channels_last resolved for ``device`` and ``model``
    (``stored``: a resumed run's config, whose values win over "auto"); a note per choice; a
    warning line or None."""
    kept: list[str] = []
    if stored is not None:
        kept = [f for f in AUTO_FIELDS if getattr(cfg.train, f) == "auto"]
        cfg = adopt_resolved(cfg, stored)
    precision = resolve_precision(cfg.train.precision, device)
    layout = resolve_channels_last(cfg.train.channels_last, device, precision.value, model)
    at_start = "as resolved when the run started"
    if "precision" in kept:
        precision = Resolved(precision.value, at_start)
    if "channels_last" in kept:
        layout = Resolved(layout.value, at_start)
    train = dataclasses.replace(cfg.train, precision=precision.value, channels_last=layout.value)
    notes = [
        f"precision {precision.value} ({precision.reason})",
        f"channels_last {'on' if layout.value else 'off'} ({layout.reason})",
    ]
    return dataclasses.replace(cfg, train=train), notes, emulation_warning(precision.value, device)


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast for a resolved ``precision`` ("fp32" runs as is)."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device.type, dtype=_DTYPES[precision]):
        yield


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
