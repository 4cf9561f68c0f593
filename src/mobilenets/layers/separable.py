"""Depthwise separable convolution, the building block of MobileNet v1."""

from __future__ import annotations

import torch
from torch import nn

from .conv_norm_act import ConvNormAct
from .norm import NormConfig


class DepthwiseSeparableConv(nn.Module):
    """K×K depthwise conv (one filter per channel) → BN → act → 1×1 pointwise conv → BN → act.

    Sub-modules: ``conv_dw`` (spatial filtering, ``groups=in_channels``) and ``conv_pw`` (channel
    mixing). Against a standard K×K conv it costs ``1/out_channels + 1/K²`` of the mult-adds.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        activation: str | None = "relu",
        norm: NormConfig | None = None,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        self.conv_dw = ConvNormAct(
            in_channels,
            in_channels,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=in_channels,
            activation=activation,
            norm=norm,
            padding=padding,
        )
        self.conv_pw = ConvNormAct(
            in_channels, out_channels, 1, activation=activation, norm=norm, padding=padding
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))
