"""Writing files so that a crash never leaves a torn one: the one helper every writer uses.

:func:`atomic_write` opens a temporary file in the target's folder (a hidden name that ends in
``.tmp``, created with the permissions any other file gets under the umask), lets the caller
write it, flushes and fsyncs it, then renames it over the target. A process killed at any
moment leaves either the previous file or the new one, never a mix; a failed write (full
disk, file size limit, an exception of the caller) removes the temporary file and keeps the
previous one. Temporary files a killed process left behind are removed by
:func:`remove_stale_temporaries` (when a process takes the folder's lock).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from .errors import PhaseguardError

#: Temporary files are ``.<target name>.<32 random hex digits>.tmp``.
TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"\..+\.[0-9a-f]{32}" + re.escape(TMP_SUFFIX))


@contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing (``mode`` "w" text, "wb" bytes) that replaces ``path``
    when the block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes text ('w') or bytes ('wb'), not {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{TMP_SUFFIX}")
    # O_EXCL as mkstemp, but mode 0666 so that the umask decides, as for open(path, "w")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, mode, **({"newline": ""} if mode == "w" else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None:  # name the target, not the tmp
            exc.filename, exc.filename2 = str(path), None
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` by ``text``."""
    with atomic_write(path) as fh:
        fh.write(text)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically replace ``path`` by ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in ``path``; a file that is not JSON raises :class:`PhaseguardError` naming
    ``what`` it should hold and the file."""
    try:
        return json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PhaseguardError(f"{path} is not a valid {what} (not JSON: {exc})") from None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` (``.<name>.<32 hex digits>.tmp``) that
    a killed process left in ``folder`` (not in its subfolders); returns them. Call only while
    holding the folder's lock (:mod:`phaseguard.lock`). Best effort: a file that cannot be
    removed is left."""
    removed = []
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if _TMP_NAME.fullmatch(tmp.name) and tmp.is_file():
            try:
                tmp.unlink()
            except OSError:
                continue
            removed.append(tmp)
    return removed
