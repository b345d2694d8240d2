"""Fourier amplitude and phase of images (docs/dat.md section 1).

``decompose`` returns the raw magnitude |F| of the per-channel 2-D FFT, fftshift-ed over (H, W)
so the DC term sits in the centre (for a 32x32 image it is in the hundreds), and the phase
angle(F), not shifted. ``recompose`` inverts that and clamps to [0, 1]. The FFT always runs in
at least float32: never in bf16/fp16, even under autocast.
"""

from __future__ import annotations

import torch
from torch import Tensor

_DIMS = (-2, -1)


def _at_least_float32(x: Tensor) -> Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def decompose(x: Tensor) -> tuple[Tensor, Tensor]:
    """Images x [..., H, W] in [0, 1] -> (amplitude, phase), each [..., H, W] real.

    amplitude: |fft2(x)|, fftshift-ed over (H, W). phase: angle(fft2(x)), unshifted.
    """
    spectrum = torch.fft.fft2(_at_least_float32(x), dim=_DIMS)
    return torch.fft.fftshift(spectrum.abs(), dim=_DIMS), spectrum.angle()


def recompose(amplitude: Tensor, phase: Tensor) -> Tensor:
    """(fftshift-ed amplitude, phase) [..., H, W] -> real images clamped to [0, 1].

    ``recompose(*decompose(x))`` returns x up to float32 rounding. Differentiable in both.
    """
    amplitude = torch.fft.ifftshift(_at_least_float32(amplitude), dim=_DIMS)
    phase = _at_least_float32(phase).to(amplitude.dtype)
    spectrum = torch.polar(amplitude, phase)
    return torch.fft.ifft2(spectrum, dim=_DIMS).real.clamp(0.0, 1.0)


def mix_amplitude(amplitude: Tensor, other: Tensor, lam: Tensor | float) -> Tensor:
    """``lam * other + (1 - lam) * amplitude``; a per-sample ``lam`` [B] broadcasts over the
    remaining dims of [B, ...] amplitudes (docs/dat.md section 3)."""
    if isinstance(lam, Tensor) and lam.dim() == 1:
        lam = lam.view(-1, *([1] * (amplitude.dim() - 1)))
    return lam * other + (1 - lam) * amplitude
