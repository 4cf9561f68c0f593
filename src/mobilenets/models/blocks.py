"""One row of an architecture table (:class:`BlockSpec`) becomes its block: the layer of each ``kind``."""

from __future__ import annotations

from torch import nn

from ..layers.channels import make_divisible
from ..layers.conv_norm_act import ConvNormAct
from ..layers.inverted_residual import InvertedResidual
from ..layers.norm import NormConfig
from ..layers.separable import DepthwiseSeparableConv, PooledSeparableConv
from .config import BlockSpec


def make_block(
    spec: BlockSpec,
    in_channels: int,
    out_channels: int,
    *,
    stride: int,
    dilation: int,
    activation: str,
    se_gate: str,
    norm: NormConfig,
    padding: str,
    drop_path_rate: float,
    projection_activation: str | None = None,
    shortcut: str = "bottleneck",
) -> nn.Module:
    """The layer a table row stands for, at the widths and stride the builder worked out for it."""
    if spec.kind == "conv":
        return ConvNormAct(
            in_channels,
            out_channels,
            spec.kernel_size,
            stride=stride,
            dilation=dilation,
            activation=activation,
            norm=norm,
            padding=padding,
        )
    if spec.kind == "ds":
        return DepthwiseSeparableConv(
            in_channels,
            out_channels,
            kernel_size=spec.kernel_size,
            stride=stride,
            dilation=dilation,
            activation=activation,
            norm=norm,
            padding=padding,
        )
    if spec.kind == "sep":
        return PooledSeparableConv(
            in_channels,
            out_channels,
            kernel_size=spec.kernel_size,
            stride=stride,
            dilation=dilation,
            activation=activation,
            norm=norm,
            padding=padding,
            separable=spec.separable,
            se_channels=make_divisible(out_channels / 4) if spec.se else 0,
            se_gate=se_gate,
            depthwise_last=spec.depthwise_last,
        )
    if spec.expand_ratio == 1:
        hidden_channels = in_channels
    else:
        hidden_channels = make_divisible(in_channels * spec.expand_ratio)
    return InvertedResidual(
        in_channels,
        out_channels,
        hidden_channels=hidden_channels,
        kernel_size=spec.kernel_size,
        stride=stride,
        dilation=dilation,
        activation=activation,
        se_channels=make_divisible(hidden_channels / 4) if spec.se else 0,
        se_gate=se_gate,
        norm=norm,
        padding=padding,
        drop_path_rate=drop_path_rate,
        separable=spec.separable,
        projection_activation=projection_activation,
        shortcut=shortcut,
    )
