"""Normalization layer settings, carried as a frozen dataclass so each architecture states its own."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from ..errors import UsageError
from .channels import is_positive_int, is_real

NORM_KINDS = ("batchnorm", "groupnorm", "none")


@dataclass(frozen=True)
class NormConfig:
    """Which normalization follows each conv, and its constants.

    ``eps`` and ``momentum`` use PyTorch's convention (momentum 0.01 is TensorFlow's decay 0.99;
    ``None``: a cumulative average). TensorFlow-trained models (MobileNet v3, EfficientNet-Lite) use
    ``eps=1e-3``. ``groups`` (group norm) must divide the channel count of every normalised layer.
    """

    kind: str = "batchnorm"
    eps: float = 1e-5
    momentum: float | None = 0.1
    groups: int = 8

    def __post_init__(self) -> None:
        if self.kind not in NORM_KINDS:
            raise UsageError(f"unknown norm kind {self.kind!r}; expected one of {', '.join(NORM_KINDS)}")
        if not is_real(self.eps) or not math.isfinite(self.eps) or self.eps <= 0:
            raise UsageError(f"norm eps must be a positive finite number, got {self.eps!r}")
        if self.momentum is not None and (not is_real(self.momentum) or not 0 <= self.momentum <= 1):
            raise UsageError(f"norm momentum must be in [0, 1] or None, got {self.momentum!r}")
        if not is_positive_int(self.groups):
            raise UsageError(f"norm groups must be a positive integer, got {self.groups!r}")

    def create(self, channels: int) -> nn.Module:
        """A fresh norm layer over ``channels`` channels (``nn.Identity`` for kind ``"none"``)."""
        if self.kind == "batchnorm":
            return nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)
        if self.kind == "groupnorm":
            if channels % self.groups:
                raise UsageError(
                    f"group norm with groups={self.groups} cannot normalise {channels} channels; "
                    f"expected a channel count divisible by {self.groups}"
                )
            return nn.GroupNorm(self.groups, channels, eps=self.eps)
        return nn.Identity()
