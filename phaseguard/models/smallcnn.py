"""A small, fast convolutional net for Fashion-MNIST-scale adversarial training on a CPU."""

from __future__ import annotations

import torch
from torch import nn

from phaseguard.errors import ModelError
from phaseguard.models.layers import check_positive_int, init_weights, input_size_problem
from phaseguard.models.registry import register_model


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias), BatchNorm, ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """conv-BN-ReLU blocks with two 2x2 max-pool downsamplings, global average pool, linear.

    Layout (w = ``width``): w | pool | 2w, 2w | pool | 4w, 4w | avg pool | linear.
    With w = 32: 278,890 parameters (1 input channel, 10 classes).

    Shapes: input [B, in_channels, H, W] with H, W >= 4 (28x28, 32x32, 64x64 ...); output
    logits [B, num_classes]. Smaller images raise :class:`ModelError`
    (:func:`~phaseguard.models.check_input_size` says so before any forward).
    """

    min_input_size = 4  # two 2x2 max-pools

    def __init__(self, num_classes: int, in_channels: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, w),
            nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w),
            conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w),
            conv_bn_relu(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] < self.min_input_size or x.shape[-1] < self.min_input_size:
            raise ModelError(input_size_problem("smallcnn", self.min_input_size, x.shape[-2:]))
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model("smallcnn")
def smallcnn(num_classes: int, in_channels: int, width: int = 32) -> SmallCNN:
    """SmallCNN; ``width`` scales every layer's channels (parameters grow as width**2)."""
    return SmallCNN(num_classes, in_channels, check_positive_int("width", width))
