"""Architectures as data: frozen dataclasses for one table row and for a whole network."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ..errors import UsageError, WrongTypeError
from ..layers.activations import check_activation
from ..layers.channels import is_positive_int, is_real
from ..layers.norm import NormConfig
from .mobilenet import check_resolution

BlockKind = Literal["conv", "ds", "sep", "ir"]
BLOCK_KINDS: tuple[str, ...] = ("conv", "ds", "sep", "ir")


def _check_positive_int(label: str, value: object) -> None:
    if not is_positive_int(value):
        raise UsageError(f"{label} must be a positive integer, got {value!r}")


def _check_kernel_size(label: str, value: object) -> None:
    if not is_positive_int(value) or value % 2 == 0:
        raise UsageError(f"{label} must be a positive odd integer (1, 3, 5, ...), got {value!r}")


def _check_stride(label: str, value: object) -> None:
    if type(value) is not int or value not in (1, 2):
        raise UsageError(f"{label} must be the integer 1 or 2, got {value!r}")


def check_rate(label: str, value: object) -> None:
    """``ValueError`` unless ``value`` is a probability-like rate in [0, 1) (dropout, drop-path)."""
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise UsageError(f"{label} must be in [0, 1), got {value!r}")


def _check_flags(owner: object, *labels: str) -> None:
    for label in labels:
        value = getattr(owner, label)
        if not isinstance(value, bool):
            raise UsageError(f"{label} must be True or False, got {value!r}")


@dataclass(frozen=True)
class BlockSpec:
    """One row of an architecture table: ``repeats`` blocks of one kind; only the first one strides.

    kind: ``"conv"`` a standard K×K conv, ``"ds"`` a depthwise separable conv (v1), ``"sep"`` one with
    a single norm and activation that downsamples by max pooling (:class:`PooledSeparableConv`),
    ``"ir"`` an inverted residual (v2/v3/EfficientNet). For ``"ir"`` the hidden width is
    ``make_divisible(expand_ratio × in_channels)`` (v2's ``t``), the input being already scaled by
    ``width_mult``. ``se`` adds squeeze-excite with ``make_divisible(hidden / 4)`` channels to an
    ``"ir"`` block (on its depthwise output), ``make_divisible(out / 4)`` to a ``"sep"`` one (on its
    output). ``separable=False`` makes an ``"ir"`` or ``"sep"`` block the standard-convolution twin
    (see :class:`InvertedResidual`); a ``"sep"`` twin keeps its squeeze-excite. ``depthwise_last``
    puts a ``"sep"`` block's depthwise conv after its pointwise one, on the block's output width.
    """

    kind: BlockKind
    out_channels: int
    repeats: int = 1
    stride: int = 1
    kernel_size: int = 3
    expand_ratio: float = 1.0
    se: bool = False
    activation: str = "relu6"
    separable: bool = True
    depthwise_last: bool = False

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise UsageError(f"unknown block kind {self.kind!r}; expected one of {', '.join(BLOCK_KINDS)}")
        _check_positive_int("out_channels", self.out_channels)
        _check_positive_int("repeats", self.repeats)
        _check_kernel_size("kernel_size", self.kernel_size)
        _check_stride("stride", self.stride)
        if not is_real(self.expand_ratio) or not math.isfinite(self.expand_ratio) or self.expand_ratio <= 0:
            raise UsageError(f"expand_ratio must be a positive finite number, got {self.expand_ratio!r}")
        _check_flags(self, "se", "separable", "depthwise_last")
        if self.depthwise_last and self.kind != "sep":
            raise UsageError(f"depthwise_last applies to 'sep' blocks only, not {self.kind!r}")
        if self.se and self.kind not in ("ir", "sep"):
            raise UsageError(f"squeeze-excite is only supported in 'ir' and 'sep' blocks, not {self.kind!r}")
        if not self.separable and (self.kind not in ("ir", "sep") or (self.se and self.kind == "ir")):
            raise UsageError(
                "separable=False applies to 'ir' blocks without squeeze-excite and to 'sep' blocks only"
            )
        check_activation(self.activation)


@dataclass(frozen=True)
class ArchSpec:
    """A whole network: stem, block table, head and the scaling rules that set it apart.

    ``head_channels``: the 1×1 conv after the blocks (v2: 1280, v3: 960), ``None`` for none (v1).
    ``pre_logits_features``: a Linear + activation after pooling (v3: 1280), ``None`` for none.
    The last of these two (or the last block when both are ``None``) is the network's *last layer*,
    which ``keep_last_wide`` keeps at its full width below ``width_mult=1``.
    ``scale_stem`` / ``scale_last``: whether those follow ``width_mult`` at all (EfficientNet-Lite: no).
    ``stem_whitening``: the stem is a :class:`~mobilenets.layers.PatchWhitening` of ``stem_kernel_size``
    (``2 × in_channels × k²`` channels, not ``stem_channels``; fitted to training images by the trainer).
    ``head_ratio``: v3 states its head conv as a multiple (6×) of the last block's scaled width; when set,
    it replaces ``head_channels``.
    ``torch_init``: keep PyTorch's default initialisation of convs and linears (airbench's) instead of
    torchvision's He-normal fan-out (:func:`~mobilenets.models.mobilenet.init_weights`): depthwise filters
    start several times larger and wide 1×1 filters smaller, which ``cifar_separable`` learns faster from.
    """

    name: str
    stem_channels: int
    blocks: tuple[BlockSpec, ...]
    stem_activation: str = "relu6"
    stem_kernel_size: int = 3
    stem_whitening: bool = False
    stem_stride: int = 2
    head_channels: int | None = None
    head_activation: str = "relu6"
    head_ratio: int | None = None
    pre_logits_features: int | None = None
    pre_logits_activation: str = "hardswish"
    norm: NormConfig = field(default_factory=NormConfig)
    scale_stem: bool = True
    scale_last: bool = True
    keep_last_wide: bool = False
    se_gate: str = "hardsigmoid"
    dropout: float = 0.2
    default_resolution: int = 224
    torch_init: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise UsageError(f"name must be a non-empty string, got {self.name!r}")
        _check_positive_int("stem_channels", self.stem_channels)
        if not isinstance(self.blocks, tuple | list) or not self.blocks:
            raise UsageError(f"blocks must be a non-empty tuple of BlockSpec, got {self.blocks!r}")
        bad = [block for block in self.blocks if not isinstance(block, BlockSpec)]
        if bad:
            raise WrongTypeError(f"blocks must all be BlockSpec, got {bad[0]!r}")
        object.__setattr__(self, "blocks", tuple(self.blocks))  # hashable like the rest of the frozen spec
        for label in ("head_channels", "pre_logits_features", "head_ratio"):
            value = getattr(self, label)
            if value is not None:
                _check_positive_int(label, value)
        _check_flags(self, "stem_whitening")
        if self.stem_whitening:  # a k×k patch covariance: any size; stride 1 (the conv shrinks by k - 1)
            _check_positive_int("stem_kernel_size", self.stem_kernel_size)
            if self.stem_stride != 1:
                raise UsageError(f"a whitening stem has stride 1, got stem_stride={self.stem_stride}")
        else:
            _check_kernel_size("stem_kernel_size", self.stem_kernel_size)
        _check_stride("stem_stride", self.stem_stride)
        for act in (self.stem_activation, self.head_activation, self.pre_logits_activation, self.se_gate):
            check_activation(act)
        if not isinstance(self.norm, NormConfig):
            raise WrongTypeError(f"norm must be a NormConfig, got {type(self.norm).__name__}")
        _check_flags(self, "scale_stem", "scale_last", "keep_last_wide", "torch_init")
        check_rate("dropout", self.dropout)
        check_resolution(self.default_resolution, name="default_resolution")
