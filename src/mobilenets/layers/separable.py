"""Depthwise separable convolutions: MobileNet v1's block, and Xception's single-norm form."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .activations import create_activation
from .channels import check_positive_ints
from .conv_norm_act import ConvNormAct
from .norm import NormConfig
from .padding import create_conv2d
from .squeeze_excite import SqueezeExcite


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


class PooledSeparableConv(nn.Module):
    """K×K depthwise conv → 1×1 pointwise conv → (2×2 max pool) → norm → activation.

    The separable convolution as Xception (Chollet 2017) uses it: nothing between the two convolutions,
    so a block makes one pass of normalisation and activation where MobileNet v1's makes two. At stride
    2 the pointwise output is max-pooled before the norm, as airbench's CIFAR-10 network downsamples
    (Jordan 2024, arXiv 2404.00498): the convolutions see the full map, the norm and activation a quarter
    of it. ``separable=False`` puts one dense K×K conv in place of the pair (the standard-conv twin).
    ``se_channels`` > 0 gates the block's output channels by squeeze-excite, after the pool where the
    map is smallest (as SE-ResNet places it on a block's output): a depthwise conv mixes no channels and
    a 1×1 conv sees one pixel, so the gate is what gives each channel a view of the whole image.

    ``depthwise_last=True`` puts the depthwise conv after the pointwise one, so that in a block that
    widens it filters the wide map (MobileNet v2's depthwise on the expanded tensor): ``out_channels``
    spatial filters where the usual order has ``in_channels``, for K² × (out − in) more mult-adds per pixel.

    Sub-modules: ``conv_dw`` (``nn.Identity`` in the twin), ``conv_pw`` (the dense conv in the twin),
    ``pool`` (``nn.Identity`` at stride 1), ``bn``, ``act``, ``se`` (``nn.Identity`` without it). The
    norm follows the pool; :func:`mobilenets.deploy.fuse` folds it into the last conv all the same
    where no channel's scale is negative (a maximum commutes with such an affine map).
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
        separable: bool = True,
        se_channels: int = 0,
        se_gate: str = "sigmoid",
        depthwise_last: bool = False,
    ) -> None:
        super().__init__()
        check_positive_ints(
            in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size, dilation=dilation
        )
        if stride not in (1, 2):
            raise UsageError(f"stride must be 1 or 2 (a 2×2 max pool), got {stride!r}")
        if type(se_channels) is not int or se_channels < 0:
            raise UsageError(
                f"se_channels must be a non-negative integer (0: no squeeze-excite), got {se_channels!r}"
            )
        norm = NormConfig() if norm is None else norm
        bias = norm.kind == "none"
        self.depthwise_last = depthwise_last and separable
        self.conv_dw: nn.Module = nn.Identity()
        if separable:
            dw_channels = out_channels if self.depthwise_last else in_channels
            self.conv_dw = create_conv2d(
                dw_channels,
                dw_channels,
                kernel_size,
                dilation=dilation,
                groups=dw_channels,
                bias=bias and self.depthwise_last,
                padding=padding,
            )
            pw_bias = bias and not self.depthwise_last
            self.conv_pw = create_conv2d(in_channels, out_channels, 1, bias=pw_bias, padding=padding)
        else:
            self.conv_pw = create_conv2d(
                in_channels, out_channels, kernel_size, dilation=dilation, bias=bias, padding=padding
            )
        self.pool: nn.Module = nn.MaxPool2d(2) if stride == 2 else nn.Identity()
        self.bn = norm.create(out_channels)
        self.act = create_activation(activation)
        self.se: nn.Module = nn.Identity()
        if se_channels:
            self.se = SqueezeExcite(out_channels, se_channels, gate=se_gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise_last:
            x = self.conv_dw(self.conv_pw(x))
        else:
            x = self.conv_pw(self.conv_dw(x))
        return self.se(self.act(self.bn(self.pool(x))))
