"""Training: data and loaders, the recipe (optimizer, schedule, EMA), the loop, checkpoints, evaluation."""

from .checkpoint import ModelCard, TrainedModel, load_trained_model, load_training_state, save_atomic
from .config import OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig
from .data import AUGMENTATIONS, DataSplits, build_loader, check_data_spec, load_eval_set, load_splits
from .engine import train
from .evaluate import evaluate
from .metrics import ClassificationMetrics

__all__ = [
    "AUGMENTATIONS",
    "OPTIMIZERS",
    "PRECISIONS",
    "SCHEDULES",
    "ClassificationMetrics",
    "DataSplits",
    "ModelCard",
    "TrainConfig",
    "TrainedModel",
    "build_loader",
    "check_data_spec",
    "evaluate",
    "load_eval_set",
    "load_splits",
    "load_trained_model",
    "load_training_state",
    "save_atomic",
    "train",
]
