"""SHA-256 fingerprints of what a cached result depends on: a model's weights, a batch of data.

A result kept on disk (AutoAttack's progress, ``eval.json``, ``analysis.json``, the eps curve, a
study's finished steps) records the fingerprints of its inputs and is reused only while they
match: a resumed or retrained model has other weights, so its old results are recomputed.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn


def _update(digest: hashlib._Hash, tensor: Tensor) -> None:
    t = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(f"{t.dtype}{tuple(tensor.shape)}".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes())


def tensors_sha256(*tensors: Tensor) -> str:
    """SHA-256 of ``tensors`` (dtypes, shapes and values, in order), on any device or layout."""
    digest = hashlib.sha256()
    for tensor in tensors:
        _update(digest, tensor)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (dtypes, shapes and values, in
    ``state_dict`` order; not the names, so a wrapper around a model has the model's
    fingerprint); independent of the device and of the memory layout."""
    return tensors_sha256(*model.state_dict().values())
