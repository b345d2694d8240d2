"""Checkpoints: written atomically, read without unpickling anything but tensors.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts saved with
``torch.save``; it is read back with ``torch.load(weights_only=True)``, so a file that carries
pickled code is refused before any of it runs. Writes go to a temporary file in the same
folder (created with the permissions of any other file of the run: 0644 under umask 022), are
flushed to disk, then renamed over the target: a crash mid-write leaves the previous checkpoint
intact.
"""

from __future__ import annotations

import os
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

FORMAT = "phaseguard-checkpoint"
VERSION = 1


@dataclass
class ModelMeta:
    """What a checkpoint records about the data its model was trained on."""

    dataset: str
    num_classes: int
    image_shape: tuple[int, int, int]
    classes: list[str]

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "num_classes": self.num_classes,
            "image_shape": list(self.image_shape),
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelMeta:
        return cls(d["dataset"], int(d["num_classes"]), tuple(d["image_shape"]), list(d["classes"]))


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write ``state`` (plus format and version tags) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # O_EXCL as mkstemp, but mode 0666 so that the umask decides, as for open(path, "w")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, "version": VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a phaseguard checkpoint; any other file is refused with a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise CheckpointError(
            f"refused {path}: it holds pickled objects other than tensors ({first})"
        ) from None
    except Exception as exc:  # any other failure of torch's reader means: not a readable file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is truncated or not a checkpoint ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a phaseguard checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')}; this phaseguard reads {VERSION}"
        )
    return state
