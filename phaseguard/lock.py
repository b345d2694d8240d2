"""One writer per run or study folder at a time.

A process that writes into a folder (``train``, ``eval``, ``analyze``, ``report``'s eps curves,
``study``) holds ``FOLDER/.phaseguard.lock`` for as long as it writes: an exclusive ``flock`` on
that file, with the holder (pid, host, command, start time) written into it. A second process
is refused with :class:`FolderLocked`, whose one-line message names the holder (the CLI exits
with status 2). The operating system releases a ``flock`` when its process dies however it dies
(SIGKILL included), so the file a killed process left behind is a stale lock that the next
process simply takes over; it then removes the temporary files the killed process's
interrupted writes left in the folder (and in a run folder's ``checkpoints/``;
:func:`phaseguard.files.remove_stale_temporaries`).

Within one process the lock is re-entrant (a study's driver holds the study folder, and the
process doing one of its runs, the driver itself or a Ray worker, holds the run folder while the
run's own commands take it again). ``flock`` works on local file systems and on NFS (where
Linux maps it to a POSIX byte-range lock): on a cluster keep run folders on such a shared file
system.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import PhaseguardError
from .files import remove_stale_temporaries

LOCK_NAME = ".phaseguard.lock"

# folder (resolved) -> [open lock file, depth] for the locks this process holds
_held: dict[Path, list] = {}


class FolderLocked(PhaseguardError):
    """Another process is writing into the folder."""


def _program() -> str:
    name = Path(sys.argv[0]).name
    return "phaseguard" if name in ("__main__.py", "phaseguard") else name


def _holder(fh: IO[str]) -> str:
    fh.seek(0)
    try:
        who = json.loads(fh.read())
        return f"pid {who['pid']} on {who['host']} ({who['command']}, since {who['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the duration of the block.

    Raises:
        FolderLocked: another process holds it; the message names that process.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fh = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 (held beyond this block's scope)
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderLocked(
                f"{folder} is in use by {_holder(fh)}; wait for it to finish or stop it"
            ) from None
        remove_stale_temporaries(folder)
        remove_stale_temporaries(folder / "checkpoints")  # a run folder's
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join([_program(), *sys.argv[1:]])[:200],
                    "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
        )
        fh.flush()
        _held[key] = [fh, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        fh.close()  # releases the flock
