"""The conv → norm → activation unit every block is made of."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError, WrongTypeError
from .activations import create_activation
from .channels import check_positive_ints, is_positive_int
from .norm import NormConfig
from .padding import create_conv2d


class ConvNormAct(nn.Module):
    """Conv2d → norm → activation, with sub-modules named ``conv``, ``bn`` and ``act``.

    Padding is derived from kernel size and dilation (or TF ``SAME``), so the spatial size only changes by
    the stride; symmetric padding therefore needs an odd ``kernel_size`` (TF ``SAME`` takes any). The conv
    has no bias when a norm follows it (the norm's shift replaces it). ``activation=None`` makes the unit
    linear, as the projection of a linear bottleneck needs.
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
        check_positive_ints(
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=kernel_size,
            stride=stride,
            dilation=dilation,
        )
        if not is_positive_int(groups) or in_channels % groups or out_channels % groups:
            raise UsageError(
                f"groups={groups!r} must be a positive integer dividing in_channels={in_channels} "
                f"and out_channels={out_channels}"
            )
        if norm is not None and not isinstance(norm, NormConfig):
            raise WrongTypeError(f"norm must be a NormConfig or None, got {type(norm).__name__}")
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
