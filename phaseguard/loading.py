"""Trained models out of run folders, checkpoints and safetensors files.

``load_model`` accepts a run folder (its ``best`` or ``last`` checkpoint), a ``.pt`` checkpoint
or a ``.safetensors`` export, and returns the classifier in eval mode, ready for any evaluation
tool: inputs [B,C,H,W] in [0,1], logits out. Nothing in the file is unpickled beyond tensors.
A file that cannot be loaded (unreadable, truncated, foreign, carrying code, a config or
metadata that is not valid, weights of another model) is a :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .build import build_model
from .checkpoint import MODEL_FIELDS, ModelMeta, load_checkpoint
from .config import MAX_CONFIG_BYTES, Config, config_from_dict, load_yaml
from .errors import CheckpointError, ConfigError, PhaseguardError
from .files import atomic_write
from .models import merge_split_bn
from .run_dir import RunDir


@dataclass
class LoadedModel:
    """A model with the config and metadata it came with."""

    model: nn.Module
    config: Config
    meta: ModelMeta
    source: Path
    epoch: int | None = None


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """A run folder becomes its ``which`` checkpoint (``last`` if there is no ``best``)."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except OSError as exc:  # a symbolic link loop, a folder it may not enter
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        run = RunDir(path)
        for name in (which, "last"):
            if os.path.lexists(run.checkpoint(name)):  # one that is there but unreadable: say so
                return run.checkpoint(name)
        raise CheckpointError(f"{path} holds no checkpoint ({run.checkpoints}/{which}.pt)")
    if not stat.S_ISREG(mode):
        raise CheckpointError(f"{path} is not a regular file (a pipe, socket or device)")
    return path


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def build_from_checkpoint(
    config_yaml: str, meta: ModelMeta, source: Path
) -> tuple[nn.Module, Config]:
    """The model (untrained) and config that a checkpoint's or export's config text and
    metadata describe; a config that is not valid, or whose model cannot be built, is a
    CheckpointError naming ``source``."""
    try:
        if len(config_yaml) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{len(config_yaml)} characters, more than any config has")
        cfg = config_from_dict(load_yaml(config_yaml, "config"))  # no alias bombs
    except (PhaseguardError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source} carries an unreadable config ({_one_line(exc)})") from None
    try:
        model = build_model(cfg, meta.num_classes, meta.image_shape[0])
    except (PhaseguardError, TypeError, ValueError) as exc:  # an unknown model, a bad argument
        reason = _one_line(exc)
        raise CheckpointError(f"{source} carries a config whose model fails ({reason})") from None
    return model, cfg


def _few(keys: list[str], count: int = 3) -> str:
    """The first ``count`` of ``keys``, and how many more there are."""
    more = f" and {len(keys) - count} more" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def weight_mismatch(model: nn.Module, state: dict) -> str | None:
    """How ``state`` does not fit ``model`` (a few missing and unexpected names, the first shape
    that differs), or None when its names and shapes are the model's."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {_few(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
    for key, tensor in expected.items():
        theirs = state.get(key)
        if isinstance(theirs, torch.Tensor) and theirs.shape != tensor.shape:
            parts.append(
                f"{key} is {list(theirs.shape)} in the file, {list(tensor.shape)} in the model"
            )
            break
    return "; ".join(parts) or None


def load_weights(model: nn.Module, state: dict, source: Path) -> None:
    """``model.load_state_dict(state)``; a mismatch is one CheckpointError line naming source
    and what does not fit (:func:`weight_mismatch`)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = weight_mismatch(model, state) if isinstance(state, dict) else None
        raise CheckpointError(
            f"{source}: the weights do not fit the {type(model).__name__} model its config "
            f"builds ({reason or _one_line(exc)})"
        ) from None


def load_model(
    path: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load a trained classifier (eval mode) from a run folder, ``.pt`` or ``.safetensors``."""
    source = resolve_checkpoint(path, which)
    if source.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(source), framework="pt") as fh:
                header = fh.metadata() or {}
            state = load_file(str(source), device=str(device))
        except OSError as exc:
            raise CheckpointError(f"cannot read {source}: {exc.strerror}") from None
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{source} is truncated or not a safetensors file ({_one_line(exc)})"
            ) from None
        missing = [k for k in ("phaseguard_config", "phaseguard_meta") if k not in header]
        if missing:
            raise CheckpointError(
                f"{source} is not a phaseguard export (no {' or '.join(missing)} metadata)"
            )
        try:
            meta = ModelMeta.from_dict(json.loads(header["phaseguard_meta"]))
        except ValueError as exc:  # not JSON, or not the metadata phaseguard writes
            reason = _one_line(exc)
            if isinstance(exc, json.JSONDecodeError):
                reason = f"not JSON: {reason}"
            raise CheckpointError(
                f"{source} carries unreadable phaseguard_meta metadata ({reason})"
            ) from None
        model, cfg = build_from_checkpoint(header["phaseguard_config"], meta, source)
        model = merge_split_bn(model)  # exports hold the main branch only
        epoch = None
    else:
        ckpt = load_checkpoint(source, map_location=device, need=MODEL_FIELDS)
        meta = ModelMeta.from_dict(ckpt["meta"])
        model, cfg = build_from_checkpoint(ckpt["config"], meta, source)
        state = ckpt.get("eval_model") or ckpt["model"]  # averaged weights when averaging
        epoch = int(ckpt["epoch"])
    load_weights(model, state, source)
    return LoadedModel(model.to(device).eval(), cfg, meta, source, epoch)


def export_safetensors(path: str | Path, out: str | Path, which: str = "best") -> Path:
    """Write the model of a run or checkpoint as safetensors (main BN branch, plain BN layers),
    atomically: a failed write raises its ``OSError`` naming ``out`` and leaves no torn file."""
    from safetensors.torch import save

    loaded = load_model(path, which)
    model = merge_split_bn(loaded.model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "phaseguard_config": loaded.config.to_yaml(),
        "phaseguard_meta": json.dumps(loaded.meta.to_dict()),
    }
    data = save(state, metadata=metadata)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_write(out, "wb") as fh:
            fh.write(data)
    except OSError as exc:  # named after the export, not its temporary file
        exc.filename, exc.filename2 = str(out), None
        raise
    return out
