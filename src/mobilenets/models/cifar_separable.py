"""A network for CIFAR-sized images made of separable convolutions, laid out for learning per epoch.

MobileNet v2 from scratch on CIFAR-10 learns about 82% in 10 epochs and 87% in the hour 2 CPU cores
allow (docs/training.md). This network follows the layout of airbench's CIFAR-10 network (Jordan 2024,
arXiv 2404.00498), with each of its 3×3 convolutions depthwise separable: a 2×2 patch-whitening stem
fitted to the training images, then three stages of two separable convolutions (64, 256 and 256
channels) that each halve the map by max pooling, GELU throughout, no classifier dropout, and
PyTorch's default initialisation (benchmarks/cifar10_layouts.py: 1.1 points more than He fan-out
after 5 epochs). ``cifar_separable_deep`` has three separable convolutions in the last two stages,
``cifar_separable_se`` squeeze-excite on the output of the blocks whose maps are 7×7 and 3×3,
``cifar_separable_dwlast`` the depthwise conv after the pointwise one in the two blocks that widen.
"""

from __future__ import annotations

import dataclasses

from typing_extensions import Unpack

from .builder import build_mobilenet
from .config import ArchSpec, BlockSpec
from .mobilenet import MobileNet
from .options import BuildOptions
from .registry import register_model


def _sep(out_channels: int, stride: int = 1, *, se: bool = False, depthwise_last: bool = False) -> BlockSpec:
    return BlockSpec(
        "sep", out_channels, stride=stride, activation="gelu", se=se, depthwise_last=depthwise_last
    )


CIFAR_SEPARABLE = ArchSpec(
    name="cifar_separable",
    stem_channels=24,  # (the whitening stem's width is 2 × 3 × 2², set by the data's channels)
    stem_whitening=True,
    stem_kernel_size=2,
    stem_stride=1,
    stem_activation="gelu",
    blocks=(_sep(64, stride=2), _sep(64), _sep(256, stride=2), _sep(256), _sep(256, stride=2), _sep(256)),
    dropout=0.0,
    default_resolution=32,
    torch_init=True,
)

# airbench96's depth where it is cheap: a third separable conv in the stages whose maps are 7×7 and
# 3×3 on 32×32 images (0.81M parameters at width 1.5 against 0.51M; docs/training.md times its step
# and trains it).
CIFAR_SEPARABLE_DEEP = dataclasses.replace(
    CIFAR_SEPARABLE,
    name="cifar_separable_deep",
    blocks=(
        _sep(64, stride=2), _sep(64),  # maps pooled to 15×15 (the 2×2 stem trims one pixel)
        _sep(256, stride=2), _sep(256), _sep(256),  # 7×7
        _sep(256, stride=2), _sep(256), _sep(256),  # 3×3
    ),
)  # fmt: skip

# MobileNet v3's squeeze-excite where it is cheap, as v3 keeps it out of its first stages: a gate on each
# block's output once the maps are 7×7 and 3×3 (sigmoid, as the SE paper's): 0.81M parameters at width
# 1.5 against 0.51M; its passes over the activations make the step 1.15× on a CPU (docs/training.md
# times the step and trains it).
CIFAR_SEPARABLE_SE = dataclasses.replace(
    CIFAR_SEPARABLE,
    name="cifar_separable_se",
    blocks=(
        _sep(64, stride=2), _sep(64),  # 15×15: no gate
        _sep(256, stride=2, se=True), _sep(256, se=True),  # 7×7
        _sep(256, stride=2, se=True), _sep(256, se=True),  # 3×3
    ),
    se_gate="sigmoid",
)  # fmt: skip

# MobileNet v2's depthwise on the wide tensor: in the two blocks that widen the network (24 → 64 and
# 64 → 256 channels at width 1) the pointwise conv comes first, so the depthwise one filters the block's
# output width: 4× the spatial filters there at width 1.5 (24 → 96 and 96 → 384) for 4% more
# mult-adds, but 1.19× the training step on a CPU (docs/training.md times the step and trains it). The
# network of the CIFAR-10 from-scratch recipe (benchmarks/train_accuracy.py cifar10-separable).
CIFAR_SEPARABLE_DWLAST = dataclasses.replace(
    CIFAR_SEPARABLE,
    name="cifar_separable_dwlast",
    blocks=(
        _sep(64, stride=2, depthwise_last=True), _sep(64),
        _sep(256, stride=2, depthwise_last=True), _sep(256),
        _sep(256, stride=2), _sep(256),
    ),
)  # fmt: skip


@register_model
def cifar_separable(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """The separable CIFAR network, widths scaled by ``width_mult``; ``mobilenets train`` fits its stem."""
    return build_mobilenet(CIFAR_SEPARABLE, width_mult=width_mult, **options)


@register_model
def cifar_separable_deep(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """``cifar_separable`` with three separable convolutions in its last two stages instead of two."""
    return build_mobilenet(CIFAR_SEPARABLE_DEEP, width_mult=width_mult, **options)


@register_model
def cifar_separable_se(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """``cifar_separable`` with squeeze-excite on the output of its blocks at 7×7 and 3×3."""
    return build_mobilenet(CIFAR_SEPARABLE_SE, width_mult=width_mult, **options)


@register_model
def cifar_separable_dwlast(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """``cifar_separable`` whose two widening blocks filter their output width (pointwise, then depthwise)."""
    return build_mobilenet(CIFAR_SEPARABLE_DWLAST, width_mult=width_mult, **options)
