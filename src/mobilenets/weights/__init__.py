"""Weights trained elsewhere: the pretrained registry, safe reading, key maps per project, presets, cards."""

from .card import ModelCard, TrainedModel, load_trained_model
from .files import UnsafeWeightsError, read_weights
from .finetune import FinetuneStart, load_for_finetuning, resolve_pretrained
from .load import LoadReport, convert, load_pretrained, load_weights
from .presets import PRESETS, Preprocess, get_preset, imagenet_classes
from .pretrained import build_pretrained
from .registry import PRETRAINED, PretrainedWeights, default_pretrained, get_pretrained, pretrained_for
from .sources import SOURCES, detect_source
from .torchvision_keys import torchvision_key_map, torchvision_module_map

__all__ = [
    "PRESETS",
    "PRETRAINED",
    "SOURCES",
    "FinetuneStart",
    "LoadReport",
    "ModelCard",
    "Preprocess",
    "PretrainedWeights",
    "TrainedModel",
    "UnsafeWeightsError",
    "build_pretrained",
    "convert",
    "default_pretrained",
    "detect_source",
    "get_preset",
    "get_pretrained",
    "imagenet_classes",
    "load_for_finetuning",
    "load_pretrained",
    "load_trained_model",
    "load_weights",
    "pretrained_for",
    "read_weights",
    "resolve_pretrained",
    "torchvision_key_map",
    "torchvision_module_map",
]
