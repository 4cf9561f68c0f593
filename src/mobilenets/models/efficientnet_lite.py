"""EfficientNet-Lite0..4: EfficientNet-B0's table made mobile-friendly (ReLU6, no SE, fixed stem and head)."""

from __future__ import annotations

import math

from typing_extensions import Unpack

from ..layers.norm import NormConfig
from .builder import MAX_WIDTH_MULT, build_mobilenet, check_width_mult
from .config import ArchSpec, BlockSpec
from .mobilenet import MobileNet
from .options import BuildOptions
from .registry import register_model

# EfficientNet paper (Tan & Le 2019) Table 1, stages 2..8:
# expansion, kernel, stride, output channels, repeats.
_B0_TABLE = (
    # e, k, s, c, n
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)

# (width, depth, resolution, dropout) from the TensorFlow efficientnet_lite_builder.
LITE_SCALING = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}


def _lite_arch(name: str) -> tuple[ArchSpec, float]:
    """The architecture of one Lite variant and its width multiplier.

    Depth scaling rounds repeats up, except for the first and last stages, which Lite keeps fixed;
    the stem (32) and head (1280) are not scaled either, since they dominate latency on small devices.
    """
    width, depth, resolution, dropout = LITE_SCALING[name]
    last = len(_B0_TABLE) - 1
    blocks = tuple(
        BlockSpec(
            "ir",
            c,
            repeats=n if i in (0, last) else math.ceil(n * depth),
            stride=s,
            kernel_size=k,
            expand_ratio=e,
        )
        for i, (e, k, s, c, n) in enumerate(_B0_TABLE)
    )
    arch = ArchSpec(
        name=name,
        stem_channels=32,
        blocks=blocks,
        head_channels=1280,
        norm=NormConfig(eps=1e-3, momentum=0.01),
        scale_stem=False,
        scale_last=False,
        dropout=dropout,
        default_resolution=resolution,
    )
    return arch, width


def _max_width_mult(name: str) -> float:
    """The largest ``width_mult`` of variant ``name``: times its own width it stays within MAX_WIDTH_MULT."""
    return MAX_WIDTH_MULT / LITE_SCALING[name][0]


def _build_lite(name: str, width_mult: float, options: BuildOptions) -> MobileNet:
    arch, width = _lite_arch(name)
    # Checked before scaling, so errors quote the caller's value and the scaled width stays in bounds.
    check_width_mult(width_mult, limit=_max_width_mult(name))
    return build_mobilenet(arch, width_mult=width * width_mult, **options)


@register_model(max_width_mult=_max_width_mult("efficientnet_lite0"))
def efficientnet_lite0(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """EfficientNet-Lite0 (224×224). ``width_mult`` multiplies the variant's own width coefficient."""
    return _build_lite("efficientnet_lite0", width_mult, options)


@register_model(max_width_mult=_max_width_mult("efficientnet_lite1"))
def efficientnet_lite1(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """EfficientNet-Lite1 (240×240)."""
    return _build_lite("efficientnet_lite1", width_mult, options)


@register_model(max_width_mult=_max_width_mult("efficientnet_lite2"))
def efficientnet_lite2(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """EfficientNet-Lite2 (260×260)."""
    return _build_lite("efficientnet_lite2", width_mult, options)


@register_model(max_width_mult=_max_width_mult("efficientnet_lite3"))
def efficientnet_lite3(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """EfficientNet-Lite3 (280×280)."""
    return _build_lite("efficientnet_lite3", width_mult, options)


@register_model(max_width_mult=_max_width_mult("efficientnet_lite4"))
def efficientnet_lite4(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """EfficientNet-Lite4 (300×300)."""
    return _build_lite("efficientnet_lite4", width_mult, options)
