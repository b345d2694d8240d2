"""Small layers shared by the architectures: input normalisation and weight initialisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from phaseguard.errors import ModelError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``, the first layer of a model that wants normalised inputs.

    phaseguard feeds every model images in [0, 1]; a model trained on standardised inputs carries
    its standardisation here, so attacks and epsilons always live in [0, 1] pixel space.

    Args:
        mean: one value per input channel.
        std: one positive value per input channel, same length as ``mean``.

    Shapes: input [B, C, H, W] with C == len(mean); output the same shape. The buffers ``mean``
    and ``std`` have shape [1, C, 1, 1] and are saved in the state dict.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or mean_t.numel() != std_t.numel():
            raise ModelError(
                f"normalize: mean and std need one value per channel, got {mean_t.numel()} "
                f"and {std_t.numel()}"
            )
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all() and (std_t > 0).all()):
            raise ModelError(f"normalize: std must be finite and > 0, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    @property
    def num_channels(self) -> int:
        """Number of channels C the layer normalises."""
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class NormalizedModel(nn.Module):
    """``net(normalize(x))``; state dict keys are ``normalize.*`` and ``net.*``.

    Shapes: input [B, C, H, W] in [0, 1]; output whatever ``net`` returns (logits [B, classes]).
    """

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def init_weights(model: nn.Module) -> None:
    """Initialise as the robustness reference code does (TRADES / AWP / DAJAT).

    Convolutions: Kaiming normal, fan-out, ReLU gain, i.e. N(0, 2 / (k*k*out_channels)).
    BatchNorm: weight 1, bias 0. Linear: PyTorch's default weight, bias 0.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an int >= 1 (not a bool), else raise ModelError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_dropout(value: object) -> float:
    """Return ``value`` as a float if it is a probability in [0, 1), else raise ModelError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ModelError(f"dropout must be a number in [0, 1), got {value!r}")
    return float(value)


def input_size_problem(name: str, need: int, size: Sequence[int]) -> str:
    """The message for images of ``size`` (H, W) smaller than ``need`` x ``need``."""
    h, w = (int(v) for v in size)
    return f"model {name} needs images of at least {need}x{need} pixels; these are {h}x{w}"


def check_input_size(model: nn.Module, image_shape: Sequence[int], name: str = "") -> None:
    """Raise :class:`ModelError` if images of ``image_shape`` (``[C,] H, W``) are smaller than
    ``model`` takes: the largest ``min_input_size`` its modules declare (1 when none does).

    ``name`` (the registry name) is used in the message, else the class name.
    """
    need = max((getattr(m, "min_input_size", 1) for m in model.modules()), default=1)
    size = tuple(image_shape)[-2:]
    if min(size) < need:
        raise ModelError(input_size_problem(name or type(model).__name__, need, size))
