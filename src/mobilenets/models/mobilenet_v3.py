"""MobileNet v3 (Howard et al. 2019, arXiv 1905.02244): NAS-found inverted residuals, SE, hard-swish."""

from __future__ import annotations

from typing_extensions import Unpack

from ..layers.norm import NormConfig
from .builder import build_mobilenet
from .config import ArchSpec, BlockSpec
from .mobilenet import MobileNet
from .options import BuildOptions
from .registry import register_model

_ACT = {"RE": "relu", "HS": "hardswish"}


def _rows(table: tuple[tuple[int, int, int, bool, str, int], ...], stem: int) -> tuple[BlockSpec, ...]:
    """Table rows as blocks. The paper gives expansion *sizes*; as in the authors' TF code (and timm),
    they act as ratios of the block's input (184/80 = 2.3), so that at ``width_mult != 1`` the expansion
    follows the scaled input. This reproduces the paper's Table 3 at 0.75 (155M / 4.0M for Large)."""
    inputs = (stem, *(row[2] for row in table[:-1]))
    return tuple(
        BlockSpec("ir", out, stride=s, kernel_size=k, expand_ratio=exp / c_in, se=se, activation=_ACT[nl])
        for c_in, (k, exp, out, se, nl, s) in zip(inputs, table, strict=True)
    )


# Paper Table 1 (large) and Table 2 (small):
# kernel, expansion size, output channels, squeeze-excite, nonlinearity, stride.
_LARGE = (
    # k, exp, out, SE, NL, s
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
_SMALL = (
    # k, exp, out, SE, NL, s
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)

# TensorFlow's batch-norm constants, as torchvision uses for v3.
_V3_NORM = NormConfig(eps=1e-3, momentum=0.01)

MOBILENET_V3_LARGE = ArchSpec(
    name="mobilenet_v3_large",
    stem_channels=16,
    stem_activation="hardswish",
    blocks=_rows(_LARGE, stem=16),
    head_ratio=6,
    head_activation="hardswish",
    pre_logits_features=1280,
    pre_logits_activation="hardswish",
    # TF's "finegrain_classification_mode": the last layer stays at full width below width 1.
    keep_last_wide=True,
    norm=_V3_NORM,
    dropout=0.2,
)
MOBILENET_V3_SMALL = ArchSpec(
    name="mobilenet_v3_small",
    stem_channels=16,
    stem_activation="hardswish",
    blocks=_rows(_SMALL, stem=16),
    head_ratio=6,
    head_activation="hardswish",
    pre_logits_features=1024,
    pre_logits_activation="hardswish",
    # TF's "finegrain_classification_mode": the last layer stays at full width below width 1.
    keep_last_wide=True,
    norm=_V3_NORM,
    dropout=0.2,
)


@register_model
def mobilenet_v3_large(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """MobileNet v3 Large; parameter names map one-to-one onto torchvision's ``mobilenet_v3_large``."""
    return build_mobilenet(MOBILENET_V3_LARGE, width_mult=width_mult, **options)


@register_model
def mobilenet_v3_small(*, width_mult: float = 1.0, **options: Unpack[BuildOptions]) -> MobileNet:
    """MobileNet v3 Small; parameter names map one-to-one onto torchvision's ``mobilenet_v3_small``."""
    return build_mobilenet(MOBILENET_V3_SMALL, width_mult=width_mult, **options)
