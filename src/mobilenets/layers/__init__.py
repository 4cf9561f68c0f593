"""Layers of depthwise-separable networks: public, documented, with named sub-modules."""

from .activations import (
    ACTIVATION_NAMES,
    ReLU6,
    create_activation,
    is_tracing,
    keep_relu6_outputs,
    set_inplace_activations,
)
from .channels import make_divisible
from .conv_norm_act import ConvNormAct
from .depthwise import DepthwiseConv2d, fast_depthwise_gradients
from .drop_path import DropPath
from .inverted_residual import ExpansionShortcutStage, InvertedResidual
from .norm import NormConfig
from .padding import PADDING_MODES, Conv2dSame, create_conv2d, tf_same_pads
from .separable import DepthwiseSeparableConv, PooledSeparableConv
from .squeeze_excite import SqueezeExcite
from .whitening import PatchWhitening

__all__ = [
    "ACTIVATION_NAMES",
    "PADDING_MODES",
    "Conv2dSame",
    "ConvNormAct",
    "DepthwiseConv2d",
    "DepthwiseSeparableConv",
    "DropPath",
    "ExpansionShortcutStage",
    "InvertedResidual",
    "NormConfig",
    "PatchWhitening",
    "PooledSeparableConv",
    "ReLU6",
    "SqueezeExcite",
    "create_activation",
    "create_conv2d",
    "fast_depthwise_gradients",
    "is_tracing",
    "keep_relu6_outputs",
    "make_divisible",
    "set_inplace_activations",
    "tf_same_pads",
]
