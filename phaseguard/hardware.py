"""What the machine can do, probed at run time: native bf16, the CPU cores this process may use.

Speed settings are decided from these probes, never from a list of CPU or GPU names
(:mod:`phaseguard.training.precision` turns them into the run's precision and memory layout).

Native bf16:

- CPU: oneDNN's own answer (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``, which honours
  ``ONEDNN_MAX_CPU_ISA``), and on x86 also the instructions that compute bf16 in hardware,
  AVX512-BF16 or AMX (oneDNN also answers yes for plain AVX-512, where it converts every bf16
  value in software). On a CPU without them, bf16 autocast was measured 10-12x slower than fp32.
- CUDA: compute capability 8.0 or newer (Ampere onwards), or ROCm. Older GPUs (T4, V100) run
  bf16 by emulation; they have fp16 tensor cores instead.

``PHASEGUARD_NATIVE_BF16=1`` or ``=0`` forces the answer (tests use it to check both
resolutions on any machine).
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

from .errors import ConfigError

NATIVE_BF16_ENV = "PHASEGUARD_NATIVE_BF16"
#: Environment variables with which a user (or torchrun) already chose the thread count.
THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _forced_bf16() -> bool | None:
    value = os.environ.get(NATIVE_BF16_ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ConfigError(f"{NATIVE_BF16_ENV}={value!r}: expected 1 or 0")


def _cpu_native_bf16() -> bool:
    try:
        onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return onednn
    names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    probes = [getattr(torch.cpu, name) for name in names if hasattr(torch.cpu, name)]
    if not probes:  # an older torch without the instruction probes: oneDNN's word alone
        return onednn
    return onednn and any(p() for p in probes)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (see the module's docstring)."""
    forced = _forced_bf16()
    if forced is not None:
        return forced
    if device.type == "cuda":
        if torch.version.hip:
            return True
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        return _cpu_native_bf16()
    return False


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """A GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores (e.g. 2.0), None when there is none.

    cgroup v2: ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"); v1: ``cpu.cfs_quota_us`` (-1: none)
    over ``cpu.cfs_period_us``, under ``cpu/`` or ``cpu,cpuacct/``. Containers mount their own
    cgroup at ``root``; the process's own path below it (``/proc/self/cgroup``) is looked at too.
    """
    own = ""
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[1] == "" or "cpu" in parts[1].split(",")):
            own = parts[2].lstrip("/")
            break
    limits = []
    for base in (root, root / "cpu", root / "cpu,cpuacct"):
        for folder in {base, base / own}:
            v2 = _read(folder / "cpu.max")
            if v2:
                quota, _, period = v2.partition(" ")
                if quota != "max" and period:
                    limits.append(int(quota) / int(period))
                continue
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0:
                limits.append(int(quota) / int(period))
    return min(limits) if limits else None


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return cores


def configure_threads(requested: int | None = None) -> str:
    """Set torch's intra-op threads and say how they were chosen.

    ``requested`` (``train.threads``) wins. Otherwise a thread count the user gave through
    ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (torchrun sets 1 per process) is left alone, and
    else torch's count is set to :func:`usable_cpus` when they differ (torch counts the host's
    cores, not a container's quota).
    """
    if requested is not None:
        if requested < 1:
            raise ConfigError(f"train.threads={requested} must be at least 1")
        torch.set_num_threads(requested)
        return f"{requested} threads (train.threads)"
    given = next((name for name in THREAD_ENVS if os.environ.get(name)), None)
    if given:
        return f"{torch.get_num_threads()} threads ({given})"
    cores = usable_cpus()
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)
    return f"{cores} threads ({cores} usable cores)"
