"""Classifiers for phaseguard: a registry of architectures, input normalisation, split BN.

Every model maps images in [0, 1], shape [B, C, H, W] (C = 1 or 3; 28x28, 32x32, 64x64 ...),
to logits [B, num_classes]. Build one with :func:`create_model`; see :func:`list_models`.
"""

from phaseguard.models import resnet, smallcnn, wide_resnet  # noqa: F401  (register models)
from phaseguard.models.layers import Normalize, NormalizedModel, check_input_size
from phaseguard.models.registry import create_model, list_models, register_model
from phaseguard.models.split_bn import (
    SplitBatchNorm,
    bn_branch,
    convert_split_bn,
    has_split_bn,
    merge_split_bn,
)

__all__ = [
    "Normalize",
    "NormalizedModel",
    "SplitBatchNorm",
    "bn_branch",
    "check_input_size",
    "convert_split_bn",
    "create_model",
    "has_split_bn",
    "list_models",
    "merge_split_bn",
    "register_model",
]
