"""Checkpoints: written atomically, read without unpickling anything but tensors.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts saved with
``torch.save`` (a zip archive); it is read back with ``torch.load(weights_only=True)``, so a
file that carries pickled code is refused before any of it runs. A file that is not a zip
archive never reaches ``torch.load`` at all: an empty file, random bytes, a plain Python pickle
(its imports are named, read with :mod:`pickletools`, nothing run) or a safetensors file each
get a :class:`CheckpointError` saying what the file is. What a readable checkpoint holds is
checked too (:data:`FIELDS`): a field of the wrong type, or one the caller needs and the file
lacks, is an error naming the file and the field.

Writes go to a temporary file in the same folder (created with the permissions of any other
file of the run: 0644 under umask 022), are flushed to disk, then renamed over the target: a
crash mid-write leaves the previous checkpoint intact, and a failed write (full disk, file size
limit) raises the ``OSError`` of the write, naming the checkpoint.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import stat
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .files import atomic_write

FORMAT = "phaseguard-checkpoint"
VERSION = 1
#: How every torch.save file (the zip format) starts.
ZIP_MAGIC = b"PK\x03\x04"
#: How a torch file in the legacy (pre-1.6, non-zip) format starts: its pickled magic number.
LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def _short(value: object) -> str:
    """``value`` in a few words for an error message (never a whole tensor or file)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    if isinstance(value, dict | list | tuple | set):
        return f"a {type(value).__name__} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        """The metadata :meth:`to_dict` wrote; ValueError saying what is wrong otherwise."""
        if not isinstance(d, dict):
            raise ValueError(f"expected a mapping, got {_short(d)}")
        missing = [k for k in ("dataset", "num_classes", "image_shape", "classes") if k not in d]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        dataset, n, shape, classes = d["dataset"], d["num_classes"], d["image_shape"], d["classes"]
        if not isinstance(dataset, str):
            raise ValueError(f"dataset should be a name, not {_short(dataset)}")
        if not _whole(n) or n < 1:
            raise ValueError(f"num_classes should be a positive whole number, not {_short(n)}")
        if not (
            isinstance(shape, list | tuple)
            and len(shape) == 3
            and all(_whole(v) and v >= 1 for v in shape)
        ):
            raise ValueError(
                f"image_shape should be [channels, height, width], not {_short(shape)}"
            )
        if not (
            isinstance(classes, list)
            and len(classes) == n
            and all(isinstance(c, str) for c in classes)
        ):
            raise ValueError(f"classes should be {n} class names, not {_short(classes)}")
        return cls(dataset, n, tuple(shape), list(classes))


def _tensors(value: object) -> str | None:
    if not isinstance(value, dict):
        return f"should be a state dict (names -> tensors), not {_short(value)}"
    for key, tensor in value.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            return f"should map names to tensors, but {_short(key)} holds {_short(tensor)}"
    return None


def _mapping(value: object) -> str | None:
    return None if isinstance(value, dict) else f"should be a mapping, not {_short(value)}"


def _meta(value: object) -> str | None:
    try:
        ModelMeta.from_dict(value)  # type: ignore[arg-type]
    except ValueError as exc:
        return f"is not the model's metadata ({exc})"
    return None


def _rng(value: object) -> str | None:
    if not isinstance(value, dict) or not isinstance(value.get("torch"), torch.Tensor):
        return f"should hold the random generators' states, not {_short(value)}"
    return None


def _best(value: object) -> str | None:
    if not (
        isinstance(value, dict)
        and _whole(value.get("epoch"))
        and isinstance(value.get("robust_acc"), int | float)
    ):
        return f"should be {{epoch, robust_acc}}, not {_short(value)}"
    return None


def _history(value: object) -> str | None:
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        return f"should be a list of per-epoch rows, not {_short(value)}"
    return None


#: What each field of a checkpoint must hold: a check that returns what is wrong, or None.
FIELDS: dict[str, Callable[[object], str | None]] = {
    "epoch": lambda v: None if _whole(v) and v >= 0 else f"should be a count, not {_short(v)}",
    "config": lambda v: None if isinstance(v, str) else f"should be YAML text, not {_short(v)}",
    "meta": _meta,
    "model": _tensors,
    "eval_model": _tensors,
    "optimizer": _mapping,
    "scaler": _mapping,
    "method": _mapping,
    "averager": _mapping,
    "rng": _rng,
    "best": _best,
    "history": _history,
}
#: The fields a model is loaded from (:func:`phaseguard.loading.load_model`).
MODEL_FIELDS = ("epoch", "config", "meta", "model")
#: The fields a training run resumes from.
RESUME_FIELDS = (
    *MODEL_FIELDS,
    "optimizer",
    "scaler",
    "method",
    "averager",
    "rng",
    "best",
    "history",
)


class _KeepWriteError:
    """A binary file for ``torch.save`` that keeps the ``OSError`` of a failed write (torch
    reports it as a RuntimeError that no longer says what went wrong)."""

    def __init__(self, fh: io.BufferedWriter) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Atomically write ``state`` (plus format and version tags) to ``path``
    (:func:`~phaseguard.files.atomic_write`); a failed write raises its ``OSError`` (naming
    ``path``) and leaves the previous file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as fh:
        out = _KeepWriteError(fh)
        try:
            torch.save({"format": FORMAT, "version": VERSION, **state}, out)
        except RuntimeError:  # torch reports a failed write as "unexpected pos"
            if out.error is None:
                raise
            raise out.error from None


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def _pickle_imports(path: Path, limit: int = 1 << 24) -> list[str] | None:
    """What a pickle file would import to rebuild its objects (``module.name``, the code that
    unpickling it runs), read with :mod:`pickletools` (nothing is unpickled); None when the
    file is not a pickle. The first ``limit`` bytes are read."""
    with path.open("rb") as fh:
        data = fh.read(limit)
    imports: list[str] = []
    strings: list[str] = []
    complete = False
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if opcode.name in ("GLOBAL", "INST"):
                imports.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":
                imports.append(".".join(strings[-2:]) if len(strings) >= 2 else "an object")
            elif isinstance(arg, str):
                strings.append(arg)
        complete = True
    except Exception:  # noqa: BLE001 - a torn or non-pickle stream, whatever pickletools says
        pass
    if not complete and not (data[:1] == b"\x80" and imports):
        return None
    return list(dict.fromkeys(imports))


def _not_an_archive(path: Path, size: int, head: bytes) -> CheckpointError:
    """The error for a file that is not a zip archive: what it is instead."""
    if size == 0:
        return CheckpointError(f"{path} is empty (0 bytes), not a checkpoint")
    header = int.from_bytes(head[:8], "little")
    if head[8:9] == b"{" and 8 + header <= size:
        return CheckpointError(
            f"{path} is a safetensors file, not a .pt checkpoint (name it *.safetensors)"
        )
    if head.startswith(LEGACY_MAGIC):
        return CheckpointError(
            f"{path} is a torch file in the legacy (non-zip) format, not a phaseguard "
            "checkpoint (those are zip archives)"
        )
    imports = _pickle_imports(path)
    if imports:
        return CheckpointError(
            f"refused {path}: it is a Python pickle that would import and run "
            f"{', '.join(imports[:3])}; phaseguard never runs code from a file"
        )
    if imports is not None:
        return CheckpointError(f"{path} is a plain Python pickle, not a checkpoint")
    return CheckpointError(f"{path} is not a checkpoint (neither a torch zip archive nor a pickle)")


def _unpickling_reason(exc: Exception) -> tuple[bool, str]:
    """(the file carries code, what torch's weights-only reader refused) from its error,
    without torch's advice to load with weights_only=False."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        return True, found.group(1)
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.startswith(("Weights only load failed", "Please file an issue", "Check the"))
    ]
    return False, lines[0] if lines else type(exc).__name__


def _torch_reason(exc: Exception) -> str:
    """The first sentence of a torch error (its advice left out)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first.split(". ")[0].removeprefix("PytorchStreamReader ")


def _read(path: Path, map_location: str | torch.device) -> object:
    """What the torch zip archive ``path`` holds, read with ``weights_only=True``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path} is {_kind(info.st_mode)}, not a checkpoint file")
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if not head.startswith(ZIP_MAGIC):
        raise _not_an_archive(path, info.st_size, head)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # noqa: BLE001 - BadZipFile and whatever else a torn directory gives
        raise CheckpointError(
            f"{path} is truncated or not a checkpoint (a zip archive without its directory: "
            "a write that was cut short?)"
        ) from None
    if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
        raise CheckpointError(f"{path} is a zip archive but not a torch checkpoint")
    try:
        with warnings.catch_warnings():  # torch's notes on odd pickles: the error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        code, reason = _unpickling_reason(exc)
        if code:
            raise CheckpointError(
                f"refused {path}: it carries pickled code ({reason}), not only tensors; "
                "phaseguard never runs code from a file"
            ) from None
        raise CheckpointError(f"{path} is corrupt ({reason})") from None
    except Exception as exc:  # noqa: BLE001 - any other failure of torch's reader
        raise CheckpointError(f"{path} is truncated or corrupt ({_torch_reason(exc)})") from None


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", need: Sequence[str] = ()
) -> dict[str, Any]:
    """Read a phaseguard checkpoint; any other file is refused with a :class:`CheckpointError`
    that names it and says what it is. Each field of :data:`FIELDS` the file holds must have
    its type; ``need``: fields it must hold (:data:`MODEL_FIELDS`, :data:`RESUME_FIELDS`)."""
    path = Path(path)
    state = _read(path, map_location)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{path} is a torch file but not a phaseguard checkpoint (it holds {_short(state)})"
        )
    if state.get("format") != FORMAT:
        keys = ", ".join(_short(k) for k in list(state)[:5]) or "none"
        raise CheckpointError(
            f"{path} is a torch file but not a phaseguard checkpoint (no format tag; keys: {keys})"
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {_short(state.get('version'))}; this phaseguard "
            f"reads {VERSION}"
        )
    missing = [key for key in need if key not in state]
    if missing:
        raise CheckpointError(f"{path} is an incomplete checkpoint: it has no {', '.join(missing)}")
    for key, check in FIELDS.items():
        problem = check(state[key]) if key in state else None
        if problem:
            raise CheckpointError(f"{path} is a damaged checkpoint: its {key} {problem}")
    return state
