"""Keep freed CPU memory in the process, so that every pass reuses the last pass's buffers.

glibc's malloc serves blocks above a threshold (dynamic, at most 32 MiB) with ``mmap`` and
hands them back to the kernel when they are freed, and it trims free memory at the heap's top.
A training iteration allocates and frees the same large activation buffers pass after pass
(ResNet-18 at batch 128: 32 MiB for one fp32 activation of the first stage), so with the
defaults every pass takes page faults and has the kernel zero its buffers again. Measured on the
development machine (2 cores, ResNet-18, batch 128, fp32; benchmarks/README.md): one training
forward and backward 2.71 s -> 2.19 s, one attack step 1.57 s -> 1.40 s, a DAT iteration
30.8 s -> 27.8 s, a PGD-AT-10 iteration 16.4 s -> 16.2 s.

:func:`keep_freed_memory` raises both thresholds to 2 GiB: freed blocks stay in the heap and
are reused. The price is that the process's resident memory stays at its peak rather than
shrinking between passes. The ``phaseguard`` command and the benchmarks call it at start;
``PHASEGUARD_SYSTEM_MALLOC=1`` keeps the C library's defaults. CUDA memory is not affected (it
has PyTorch's caching allocator), nor are platforms without glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters of <malloc.h>
_LIMIT = 2**31 - 1  # mallopt takes a C int


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to 2 GiB for reuse (see the module's docstring).

    Returns whether the setting took effect: False without glibc or with the environment
    variable ``PHASEGUARD_SYSTEM_MALLOC`` set to anything but ``0`` or empty.
    """
    if os.environ.get("PHASEGUARD_SYSTEM_MALLOC", "0") not in ("", "0"):
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return all(libc.mallopt(p, _LIMIT) == 1 for p in (_M_MMAP_THRESHOLD, _M_TRIM_THRESHOLD))
