"""Wide ResNets as used in robustness work (Zagoruyko & Komodakis 2016; TRADES / AWP code).

WRN-d-k: a 3x3 stem with 16 channels, three stages of (d - 4) / 6 pre-activation blocks with
16k, 32k and 64k channels (strides 1, 2, 2), BN-ReLU, global average pooling, linear head.
Dropout inside the blocks is 0 by default, as in the robustness references.
"""

from __future__ import annotations

from phaseguard.errors import ModelError
from phaseguard.models.layers import check_dropout, check_positive_int
from phaseguard.models.registry import register_model
from phaseguard.models.resnet import PreActBlock, ResNet


@register_model("wrn")
def wide_resnet(
    num_classes: int,
    in_channels: int,
    depth: int = 34,
    widen_factor: int = 10,
    dropout: float = 0.0,
) -> ResNet:
    """WRN-``depth``-``widen_factor``; ``depth`` must be 6n + 4 (10, 16, 22, 28, 34, 40 ...)."""
    check_positive_int("depth", depth)
    check_positive_int("widen_factor", widen_factor)
    if depth < 10 or (depth - 4) % 6:
        raise ModelError(f"wide ResNet depth must be 6n + 4 with n >= 1 (e.g. 28, 34), got {depth}")
    n = (depth - 4) // 6
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    return ResNet(
        PreActBlock,
        (n, n, n),
        widths,
        num_classes,
        in_channels,
        stem_width=16,
        dropout=check_dropout(dropout),
    )


@register_model("wrn28_10")
def wrn28_10(num_classes: int, in_channels: int, dropout: float = 0.0) -> ResNet:
    """WRN-28-10: 36.5M parameters."""
    return wide_resnet(num_classes, in_channels, depth=28, widen_factor=10, dropout=dropout)


@register_model("wrn34_10")
def wrn34_10(num_classes: int, in_channels: int, dropout: float = 0.0) -> ResNet:
    """WRN-34-10, the standard large CIFAR robustness model: 46.2M parameters."""
    return wide_resnet(num_classes, in_channels, depth=34, widen_factor=10, dropout=dropout)
