"""MobileNet-family models: architecture tables, one builder, a registry."""

from .builder import build_mobilenet, standard_conv_twin
from .cifar_separable import cifar_separable, cifar_separable_deep, cifar_separable_dwlast, cifar_separable_se
from .config import ArchSpec, BlockSpec
from .efficientnet_lite import (
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
)
from .features import FeatureInfo, FeatureLevel
from .hub import check_pretrained_options
from .mobilenet import MAX_INPUT_SIZE, MIN_INPUT_SIZE, MobileNet, check_resolution
from .mobilenet_v1 import conv_mobilenet_v1, mobilenet_v1
from .mobilenet_v2 import conv_mobilenet_v2, mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .options import BuildOptions
from .registry import check_model_options, create_model, get_builder, list_models, register_model

__all__ = [
    "MAX_INPUT_SIZE",
    "MIN_INPUT_SIZE",
    "ArchSpec",
    "BlockSpec",
    "BuildOptions",
    "FeatureInfo",
    "FeatureLevel",
    "MobileNet",
    "build_mobilenet",
    "check_model_options",
    "check_pretrained_options",
    "check_resolution",
    "cifar_separable",
    "cifar_separable_deep",
    "cifar_separable_dwlast",
    "cifar_separable_se",
    "conv_mobilenet_v1",
    "conv_mobilenet_v2",
    "create_model",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "get_builder",
    "list_models",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "register_model",
    "standard_conv_twin",
]
