"""Image data: ``--data`` specs, decoding, datasets, reproducible loaders and transforms.

Training, evaluation, export (calibration and verification images) and prediction all read images
through this package, so a folder, a labelled list or CIFAR-10 is prepared the same way everywhere.
"""

from .card import card_calibration_set, card_eval_set, first_images
from .folders import DataSpec, parse_data_spec
from .images import ImageDecodeError, decode_image_file
from .loader import Loader, build_loader, check_workers
from .splits import (
    DataSplits,
    check_data_spec,
    default_resolution,
    load_digits_dataset,
    load_eval_set,
    load_preprocessed_eval_set,
    load_splits,
)
from .transforms import AUGMENTATIONS, PADDING_MODES, Augmentation

__all__ = [
    "AUGMENTATIONS",
    "PADDING_MODES",
    "Augmentation",
    "DataSpec",
    "DataSplits",
    "ImageDecodeError",
    "Loader",
    "build_loader",
    "card_calibration_set",
    "card_eval_set",
    "check_data_spec",
    "check_workers",
    "decode_image_file",
    "default_resolution",
    "first_images",
    "load_digits_dataset",
    "load_eval_set",
    "load_preprocessed_eval_set",
    "load_splits",
    "parse_data_spec",
]
