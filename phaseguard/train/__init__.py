"""Training: the loop, checkpoints, schedules, precision, logging and DDP plumbing."""

from .checkpoint import load_checkpoint, save_checkpoint
from .trainer import Trainer, TrainResult, build_model, resume_config, train

__all__ = [
    "TrainResult",
    "Trainer",
    "build_model",
    "load_checkpoint",
    "resume_config",
    "save_checkpoint",
    "train",
]
