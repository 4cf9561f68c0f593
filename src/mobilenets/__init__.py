"""mobilenets: build, analyse, train, compress, export and benchmark MobileNet-family networks."""

from . import weights  # installs pretrained loading into the builders (create_model(..., pretrained=True))
from .layers import (
    ConvNormAct,
    DepthwiseSeparableConv,
    InvertedResidual,
    NormConfig,
    PatchWhitening,
    PooledSeparableConv,
    SqueezeExcite,
    make_divisible,
)
from .models import (
    MobileNet,
    cifar_separable,
    cifar_separable_deep,
    cifar_separable_se,
    conv_mobilenet_v1,
    conv_mobilenet_v2,
    create_model,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
    list_models,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3_large,
    mobilenet_v3_small,
)

__version__ = "0.1.0"

__all__ = [
    "ConvNormAct",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "MobileNet",
    "NormConfig",
    "PatchWhitening",
    "PooledSeparableConv",
    "SqueezeExcite",
    "__version__",
    "cifar_separable",
    "cifar_separable_deep",
    "cifar_separable_se",
    "conv_mobilenet_v1",
    "conv_mobilenet_v2",
    "create_model",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite3",
    "efficientnet_lite4",
    "list_models",
    "make_divisible",
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_large",
    "mobilenet_v3_small",
    "weights",
]
