"""Training: the recipe (optimizer, schedule, EMA), the loop, checkpoints, torchrun, curves.

Images come from :mod:`mobilenets.data`; scoring from :mod:`mobilenets.evaluation`.
"""

from .checkpoint import ModelCard, TrainedModel, load_trained_model, load_training_state, save_atomic
from .config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from .engine import train

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "ModelCard",
    "TrainConfig",
    "TrainedModel",
    "load_trained_model",
    "load_training_state",
    "save_atomic",
    "train",
]
