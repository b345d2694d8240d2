"""phaseguard: adversarially robust image classifiers in PyTorch.

DAT (dual adversarial training with an adversarial amplitude generator, NeurIPS 2024) and the
baselines it is compared with, on one training engine, with honest evaluation.
"""

from .config import Config, load_config
from .data import load_dataset
from .errors import PhaseguardError
from .evaluation import evaluate
from .loading import export_safetensors, load_model
from .models import create_model, list_models
from .training import train

__version__ = "0.1.0"

__all__ = [
    "Config",
    "PhaseguardError",
    "create_model",
    "evaluate",
    "export_safetensors",
    "list_models",
    "load_config",
    "load_dataset",
    "load_model",
    "train",
]
