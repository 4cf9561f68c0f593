"""Training: small in-memory datasets, atomic checkpoints and the train/evaluate loop."""

from .checkpoint import load_checkpoint, save_atomic, save_checkpoint
from .data import DATASETS, NUM_CLASSES, build_dataloaders, load_digits_dataset
from .engine import TrainConfig, train

__all__ = [
    "DATASETS",
    "NUM_CLASSES",
    "TrainConfig",
    "build_dataloaders",
    "load_checkpoint",
    "load_digits_dataset",
    "save_atomic",
    "save_checkpoint",
    "train",
]
