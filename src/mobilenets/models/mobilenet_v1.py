"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861): a stem conv and 13 depthwise separable convs."""

from __future__ import annotations

from typing_extensions import Unpack

from .builder import build_mobilenet, standard_conv_twin
from .config import ArchSpec, BlockSpec
from .mobilenet import MobileNet
from .options import BuildOptions
from .registry import register_model


def _ds(out_channels: int, stride: int = 1, repeats: int = 1) -> BlockSpec:
    return BlockSpec("ds", out_channels, repeats=repeats, stride=stride)


# Paper Table 1 (stem: 3×3 conv, 32 channels, stride 2). Its row "Conv dw / s2" at 7×7×1024 is a misprint:
# the input is already 7×7, so that depthwise conv has stride 1.
MOBILENET_V1 = ArchSpec(
    name="mobilenet_v1",
    stem_channels=32,
    blocks=(
        _ds(64),
        _ds(128, stride=2),
        _ds(128),
        _ds(256, stride=2),
        _ds(256),
        _ds(512, stride=2),
        _ds(512, repeats=5),
        _ds(1024, stride=2),
        _ds(1024),
    ),
    # ReLU6 as in the authors' TF-slim code, where the published checkpoints come from.
    stem_activation="relu6",
    dropout=0.2,
)


@register_model
def mobilenet_v1(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """MobileNet v1 with width multiplier α = ``width_mult`` (the resolution multiplier is the input size)."""
    return build_mobilenet(MOBILENET_V1, width_mult=width_mult, **options)


@register_model
def conv_mobilenet_v1(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """MobileNet v1 with each depthwise separable pair replaced by one standard 3×3 conv (paper Table 4)."""
    return build_mobilenet(standard_conv_twin(MOBILENET_V1), width_mult=width_mult, **options)
