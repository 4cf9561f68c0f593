"""Weights trained elsewhere: safe reading, key maps per project, preprocessing presets, model cards."""

from .card import ModelCard, TrainedModel, load_trained_model
from .files import UnsafeWeightsError, read_weights
from .finetune import FinetuneStart, load_for_finetuning, resolve_pretrained
from .load import LoadReport, convert, load_pretrained, load_weights
from .packaged import PACKAGED, PackagedWeights, packaged_weights
from .presets import PRESETS, Preprocess, get_preset, imagenet_classes
from .sources import SOURCES, detect_source
from .torchvision_keys import torchvision_key_map, torchvision_module_map

__all__ = [
    "PACKAGED",
    "PRESETS",
    "SOURCES",
    "FinetuneStart",
    "LoadReport",
    "ModelCard",
    "PackagedWeights",
    "Preprocess",
    "TrainedModel",
    "UnsafeWeightsError",
    "convert",
    "detect_source",
    "get_preset",
    "imagenet_classes",
    "load_for_finetuning",
    "load_pretrained",
    "load_trained_model",
    "load_weights",
    "packaged_weights",
    "read_weights",
    "resolve_pretrained",
    "torchvision_key_map",
    "torchvision_module_map",
]
