"""Training: the loop, schedules, precision, logging, AWP, weight averaging and DDP plumbing.

The checkpoint format lives in :mod:`phaseguard.checkpoint`, beside loading, which reads it too.
"""

from .step import TrainingStep
from .trainer import Trainer, TrainResult, resume_config, train

__all__ = ["TrainResult", "Trainer", "TrainingStep", "resume_config", "train"]
