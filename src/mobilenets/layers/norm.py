"""Normalization layer settings, carried as a frozen dataclass so each architecture states its own."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

NORM_KINDS = ("batchnorm", "groupnorm", "none")


@dataclass(frozen=True)
class NormConfig:
    """Which normalization follows each conv, and its constants.

    ``eps`` and ``momentum`` use PyTorch's convention (momentum 0.01 is TensorFlow's decay 0.99).
    TensorFlow-trained models (MobileNet v3, EfficientNet-Lite) use ``eps=1e-3``.
    """

    kind: str = "batchnorm"
    eps: float = 1e-5
    momentum: float = 0.1
    groups: int = 8

    def __post_init__(self) -> None:
        if self.kind not in NORM_KINDS:
            raise ValueError(f"unknown norm kind {self.kind!r}; expected one of {', '.join(NORM_KINDS)}")
        if self.eps <= 0:
            raise ValueError(f"norm eps must be positive, got {self.eps}")

    def create(self, channels: int) -> nn.Module:
        """A fresh norm layer over ``channels`` channels (``nn.Identity`` for kind ``"none"``)."""
        if self.kind == "batchnorm":
            return nn.BatchNorm2d(channels, eps=self.eps, momentum=self.momentum)
        if self.kind == "groupnorm":
            groups = self.groups if channels % self.groups == 0 else 1
            return nn.GroupNorm(groups, channels, eps=self.eps)
        return nn.Identity()
