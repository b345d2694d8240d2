"""Run the phaseguard CLI and SIGKILL this very process at one chosen file write.

    python kill_at.py MODE NAME ARGS...

MODE ``fsync``: killed when a temporary file for NAME (a file name such as ``last.pt``) is
about to be flushed to disk, its bytes written but not yet renamed; MODE ``replace``: killed
just before the first rename onto NAME. The write itself is phaseguard's own; only the kill is
injected, as a power cut or the OOM killer would deliver it.
"""

import os
import signal
import sys

mode, name, args = sys.argv[1], sys.argv[2], sys.argv[3:]
real_fsync, real_replace = os.fsync, os.replace


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fsync(fd: int) -> None:
    if f".{name}." in os.path.basename(os.readlink(f"/proc/self/fd/{fd}")):
        _die()
    real_fsync(fd)


def replace(src, dst, *rest, **kwargs):
    if os.path.basename(os.fspath(dst)) == name:
        _die()
    return real_replace(src, dst, *rest, **kwargs)


if mode == "fsync":
    os.fsync = fsync
else:
    os.replace = replace

from phaseguard.cli import main  # noqa: E402

sys.exit(main(args))
