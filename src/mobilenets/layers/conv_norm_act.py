"""The conv → norm → activation unit every block is made of."""

from __future__ import annotations

import torch
from torch import nn

from .activations import create_activation
from .norm import NormConfig
from .padding import create_conv2d


class ConvNormAct(nn.Module):
    """Conv2d → norm → activation, with sub-modules named ``conv``, ``bn`` and ``act``.

    Padding is derived from kernel size and dilation (or TF ``SAME``). The conv has no bias when a norm
    follows it (the norm's shift replaces it). ``activation=None`` makes the unit linear, as the
    projection of a linear bottleneck needs.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        activation: str | None = "relu6",
        norm: NormConfig | None = None,
        padding: str = "symmetric",
    ) -> None:
        super().__init__()
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        for label, value in (("kernel_size", kernel_size), ("stride", stride), ("dilation", dilation)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{label} must be a positive integer, got {value!r}")
        if not isinstance(groups, int) or groups <= 0 or in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups!r} must be a positive integer dividing in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        norm = NormConfig() if norm is None else norm
        self.conv = create_conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=groups,
            bias=norm.kind == "none",
            padding=padding,
        )
        self.bn = norm.create(out_channels)
        self.act = create_activation(activation)

    @property
    def in_channels(self) -> int:
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
