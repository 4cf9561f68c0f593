"""Squeeze-and-excitation: reweight channels by a gate computed from their global average."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .activations import create_activation
from .channels import is_positive_int


class SqueezeExcite(nn.Module):
    """Global average pool → 1×1 conv ``fc1`` → activation → 1×1 conv ``fc2`` → gate → scale the input.

    MobileNet v3 uses ReLU and hard-sigmoid with ``squeeze_channels = make_divisible(channels / 4)``.
    The sub-module names match torchvision's ``SqueezeExcitation`` so its weights load unchanged.
    """

    def __init__(
        self,
        channels: int,
        squeeze_channels: int,
        *,
        activation: str = "relu",
        gate: str = "hardsigmoid",
    ) -> None:
        super().__init__()
        if not is_positive_int(channels) or not is_positive_int(squeeze_channels):
            raise UsageError(
                f"SqueezeExcite needs positive integer channel counts, got channels={channels!r}, "
                f"squeeze_channels={squeeze_channels!r}"
            )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.act = create_activation(activation)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.gate = create_activation(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.act(self.fc1(self.avgpool(x)))))
        return x * scale
