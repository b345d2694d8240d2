"""CIFAR-style residual networks: ResNet-18 and pre-activation ResNet-18.

Both use the CIFAR stem of the robustness literature (Madry / TRADES / DAJAT / DAT): one 3x3
convolution with stride 1 and no max-pool, so a 32x32 image reaches the last stage at 4x4.
:class:`ResNet` is also the body of the wide ResNets (``wide_resnet.py``), which are
pre-activation ResNets with three wide stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from phaseguard.models.layers import init_weights
from phaseguard.models.registry import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm always follows or precedes it)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Post-activation residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    The shortcut is a 1x1 convolution followed by BatchNorm when the stride or the width changes.
    Shapes: [B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride].
    """

    preact = False

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016; the TRADES / AWP wide-ResNet block).

    out = conv2(dropout(relu(bn2(conv1(a))))) + shortcut, with a = relu(bn1(x)). The shortcut
    is x itself, or a 1x1 convolution of ``a`` when the stride or the width changes.
    Shapes: [B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride].
    """

    preact = True

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(a)
        out = self.conv1(a)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        return out + shortcut


class ResNet(nn.Module):
    """Residual network for small images: stem, stages, global average pooling, linear head.

    Args:
        block: :class:`BasicBlock` (post-activation) or :class:`PreActBlock`.
        depths: blocks per stage; the first stage keeps the resolution, each later one halves it.
        widths: output channels per stage, same length as ``depths``.
        num_classes: number of logits.
        in_channels: 1 (grayscale) or 3 (colour).
        stem_width: channels of the stem convolution (default ``widths[0]``).
        **block_kwargs: extra arguments for every block (``dropout`` for PreActBlock).

    A post-activation net applies BN-ReLU right after the stem; a pre-activation net applies it
    once after the last stage instead. Adaptive pooling makes any input size >= 2**(stages-1)
    work (28x28, 32x32, 64x64 ...).
    Shapes: input [B, in_channels, H, W] in [0, 1] (or normalised); output logits
    [B, num_classes].
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[PreActBlock],
        depths: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        in_channels: int,
        stem_width: int | None = None,
        **block_kwargs: float,
    ) -> None:
        super().__init__()
        width = widths[0] if stem_width is None else stem_width
        stem: list[nn.Module] = [conv3x3(in_channels, width)]
        if not block.preact:
            stem += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem)
        stages = []
        for i, (depth, out_width) in enumerate(zip(depths, widths)):
            blocks = []
            for j in range(depth):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(block(width, out_width, stride, **block_kwargs))
                width = out_width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final = (
            nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(inplace=True))
            if block.preact
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.final(self.stages(self.stem(x)))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int) -> ResNet:
    """ResNet-18 (BasicBlock [2, 2, 2, 2], widths 64-512, CIFAR stem); 11.2M parameters."""
    return ResNet(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels)


@register_model("preact_resnet18")
def preact_resnet18(num_classes: int, in_channels: int) -> ResNet:
    """Pre-activation ResNet-18 (PreActBlock [2, 2, 2, 2], widths 64-512, final BN-ReLU)."""
    return ResNet(PreActBlock, (2, 2, 2, 2), (64, 128, 256, 512), num_classes, in_channels)
