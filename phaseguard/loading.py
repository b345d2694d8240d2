"""Trained models out of run folders, checkpoints and safetensors files.

``load_model`` accepts a run folder (its ``best`` or ``last`` checkpoint), a ``.pt`` checkpoint
or a ``.safetensors`` export, and returns the classifier in eval mode, ready for any evaluation
tool: inputs [B,C,H,W] in [0,1], logits out. Nothing in the file is unpickled beyond tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from .build import build_model
from .checkpoint import ModelMeta, load_checkpoint
from .config import Config, config_from_dict
from .errors import CheckpointError, PhaseguardError
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
    if path.is_dir():
        run = RunDir(path)
        for name in (which, "last"):
            if run.checkpoint(name).is_file():
                return run.checkpoint(name)
        raise CheckpointError(f"{path} holds no checkpoint ({run.checkpoints}/{which}.pt)")
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    return path


def _build(config_yaml: str, meta: ModelMeta, source: Path) -> tuple[nn.Module, Config]:
    try:
        cfg = config_from_dict(yaml.safe_load(config_yaml))
    except (yaml.YAMLError, PhaseguardError, TypeError) as exc:
        raise CheckpointError(f"{source} carries an unreadable config ({exc})") from None
    return build_model(cfg, meta.num_classes, meta.image_shape[0]), cfg


def load_weights(model: nn.Module, state: dict, source: Path) -> None:
    """``model.load_state_dict(state)``; a mismatch is one CheckpointError line naming source."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{source}: weights do not fit the model ({reason})") from None


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
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{source} is not a readable safetensors file ({exc})") from None
        if "phaseguard_config" not in header:
            raise CheckpointError(f"{source} is not a phaseguard export (no phaseguard metadata)")
        meta = ModelMeta.from_dict(json.loads(header["phaseguard_meta"]))
        model, cfg = _build(header["phaseguard_config"], meta, source)
        model = merge_split_bn(model)  # exports hold the main branch only
        epoch = None
    else:
        ckpt = load_checkpoint(source, map_location=device)
        meta = ModelMeta.from_dict(ckpt["meta"])
        model, cfg = _build(ckpt["config"], meta, source)
        state = ckpt.get("eval_model") or ckpt["model"]  # averaged weights when averaging
        epoch = int(ckpt["epoch"])
    load_weights(model, state, source)
    return LoadedModel(model.to(device).eval(), cfg, meta, source, epoch)


def export_safetensors(path: str | Path, out: str | Path, which: str = "best") -> Path:
    """Write the model of a run or checkpoint as safetensors (main BN branch, plain BN layers)."""
    from safetensors.torch import save_file

    loaded = load_model(path, which)
    model = merge_split_bn(loaded.model)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "phaseguard_config": loaded.config.to_yaml(),
        "phaseguard_meta": json.dumps(loaded.meta.to_dict()),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=metadata)
    return out
