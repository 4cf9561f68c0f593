"""MobileNet v2 (Sandler et al. 2018, arXiv 1801.04381): inverted residuals with linear bottlenecks."""

from __future__ import annotations

from typing_extensions import Unpack

from .builder import build_mobilenet, standard_conv_twin
from .config import ArchSpec, BlockSpec
from .mobilenet import MobileNet
from .options import BuildOptions
from .registry import register_model

# Paper Table 2: expansion t, output channels c, repeats n, first stride s.
_TABLE_2 = (
    # t, c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

MOBILENET_V2 = ArchSpec(
    name="mobilenet_v2",
    stem_channels=32,
    blocks=tuple(BlockSpec("ir", c, repeats=n, stride=s, expand_ratio=t) for t, c, n, s in _TABLE_2),
    head_channels=1280,
    # "For multipliers less than one, we apply width multiplier to all layers except the very last" (§6.1).
    keep_last_wide=True,
    dropout=0.2,
)


@register_model
def mobilenet_v2(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """MobileNet v2; parameter names map one-to-one onto torchvision's ``mobilenet_v2``."""
    return build_mobilenet(MOBILENET_V2, width_mult=width_mult, **options)


@register_model
def conv_mobilenet_v2(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """MobileNet v2 whose depthwise 3×3 + linear 1×1 pairs are each one dense 3×3 conv (comparison twin)."""
    return build_mobilenet(standard_conv_twin(MOBILENET_V2), width_mult=width_mult, **options)
