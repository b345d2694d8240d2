"""The Adversarial Amplitude Generator (AAG) of DAT (docs/dat.md section 2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

HIDDEN = (128, 256, 512, 1024)


class AmplitudeGenerator(nn.Module):
    """MLP from noise and the classifier's logits to an amplitude map in (0, 1), or to a
    log-amplitude offset in (-log_scale, log_scale).

    Input: z [B, z_dim] ~ N(0, I) and logits [B, num_classes] (the classifier's, detached, on the
    un-augmented image). Layers: Linear(z_dim + classes, 128), LReLU(0.2); then 256, 512, 1024
    units each Linear, BatchNorm1d, LReLU(0.2); Linear(1024, C*H*W), Sigmoid. Output: amplitudes
    [B, C, H, W] in (0, 1), in fftshift-ed coordinates (one value per frequency and channel).

    With ``log_scale`` s (not the paper's design; DAT's ``generator_output: log_scale``) the last
    activation is ``s * tanh``: an offset in (-s, s) of the image's own log-amplitude per
    frequency and channel, i.e. a factor exp(offset) in (e^-s, e^s) on |F(x)|. The layers and
    their initial weights are the same as the sigmoid's.

    ``bn_eps`` defaults to 0.8: the reference code passes 0.8 as BatchNorm1d's second positional
    argument, which is eps, not momentum (the usual GAN-code slip); the published numbers were
    produced with it, so it is the default here. The generator always normalises with batch
    statistics: it stays in train mode whatever ``.eval()`` says.
    """

    def __init__(
        self,
        num_classes: int,
        image_shape: tuple[int, int, int],
        z_dim: int = 100,
        bn_eps: float = 0.8,
        log_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.num_classes, self.image_shape, self.z_dim = num_classes, tuple(image_shape), z_dim
        self.log_scale = log_scale
        layers: list[nn.Module] = [nn.Linear(z_dim + num_classes, HIDDEN[0]), nn.LeakyReLU(0.2)]
        for width_in, width_out in zip(HIDDEN, HIDDEN[1:]):
            layers += [
                nn.Linear(width_in, width_out),
                nn.BatchNorm1d(width_out, eps=bn_eps),
                nn.LeakyReLU(0.2),
            ]
        last = nn.Sigmoid() if log_scale is None else nn.Tanh()
        layers += [nn.Linear(HIDDEN[-1], math.prod(self.image_shape)), last]
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
        super().train(True)

    def train(self, mode: bool = True) -> AmplitudeGenerator:
        """Always train mode (batch statistics), as in the reference."""
        return super().train(True)

    def forward(self, z: Tensor, logits: Tensor) -> Tensor:
        """z [B, z_dim], logits [B, num_classes] -> [B, C, H, W]: amplitudes in (0, 1), or
        log-amplitude offsets in (-log_scale, log_scale)."""
        h = torch.cat([z, logits.detach().to(z.dtype)], dim=1)
        out = self.net(h).view(-1, *self.image_shape)
        return out if self.log_scale is None else self.log_scale * out
