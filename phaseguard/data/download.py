"""Download the official dataset archives and verify their published MD5 checksums.

Each dataset's files and checksums are part of its registry entry
(:class:`~phaseguard.data.registry.Source`). Files land in ``root/<name>/<file name>``, where
``load_dataset(name, root)`` finds them.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from pathlib import Path

from tqdm import tqdm

from phaseguard.data.registry import DATASETS, downloadable_datasets
from phaseguard.errors import DataError

_CHUNK = 1 << 20


def download(
    name: str,
    root: str | Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    checksums: dict[str, str] | None = None,
) -> Path:
    """Download dataset ``name`` into ``root/<name>`` and return that folder.

    Each file is streamed to a temporary file beside its destination while its MD5 is computed,
    and renamed into place only when the MD5 matches; otherwise it is deleted and
    :class:`DataError` names the expected and actual checksums. A file already present with the
    right checksum is kept. ``base_url`` (else ``$PHASEGUARD_DOWNLOAD_URL``, else the official
    host) is the URL the file names are appended to; ``checksums`` maps file names to MD5s that
    replace the published ones (for mirrors and tests). An unknown name or a dataset without
    a source raises :class:`DataError` naming the downloadable ones.
    """
    source = DATASETS.get(name).source
    if source is None:
        raise DataError(
            f"cannot download '{name}'; downloadable datasets: "
            + ", ".join(downloadable_datasets())
        )
    base = base_url or os.environ.get("PHASEGUARD_DOWNLOAD_URL") or source.base_url
    folder = Path(root).expanduser() / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create download folder {folder}: {error}") from error
    for remote in source.files:
        md5 = (checksums or {}).get(remote.name, remote.md5)
        target = folder / remote.name
        if not (target.is_file() and _md5(target) == md5):
            _fetch(f"{base.rstrip('/')}/{remote.name}", target, md5, progress)
    return folder


def _fetch(url: str, target: Path, md5: str, progress: bool) -> None:
    """Stream ``url`` into ``target`` if its MD5 is ``md5``; leave nothing behind otherwise."""
    digest = hashlib.md5(usedforsecurity=False)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        with part.open("wb") as file, urllib.request.urlopen(url, timeout=60) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=size, unit="B", unit_scale=True, desc=target.name, disable=not progress
            ) as bar:
                while chunk := response.read(_CHUNK):
                    file.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(
                f"checksum mismatch for {url}: expected md5 {md5}, got {digest.hexdigest()}; "
                "the download was deleted"
            )
        os.replace(part, target)
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DataError(f"could not download {url}: {error}") from error
    finally:
        part.unlink(missing_ok=True)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
