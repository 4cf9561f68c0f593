"""Convolution padding: PyTorch's symmetric padding, or TensorFlow's asymmetric ``SAME``.

TensorFlow pads ``SAME`` convolutions so that ``out = ceil(in / stride)``, putting the odd pixel of
padding on the bottom/right. For a stride-2 3×3 conv on a 224×224 input that is 0 rows on top and 1
below, where PyTorch's symmetric padding uses 1 and 1: the sampling grid shifts by a pixel and a
TensorFlow-trained checkpoint loses several points of accuracy. ``Conv2dSame`` reproduces it exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

PADDING_MODES = ("symmetric", "tf_same")


def symmetric_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the spatial size at stride 1 when the dilated kernel's extent is odd.

    ``(k - 1) * dilation // 2``: for an even ``k`` with an even dilation the extent is odd too (k=2, d=2
    spans 3 pixels and needs 1 on each side, where ``(k - 1) // 2 * d`` gave 0 and shrank the map).
    """
    return (kernel_size - 1) * dilation // 2


def tf_same_pads(size: int, kernel_size: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of one spatial dimension under TensorFlow's ``SAME`` rule."""
    effective = (kernel_size - 1) * dilation + 1
    total = max((math.ceil(size / stride) - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def needs_dynamic_padding(kernel_size: int, stride: int, dilation: int) -> bool:
    """Whether TF ``SAME`` differs from symmetric padding for this conv (it does when strided or even)."""
    return stride > 1 or ((kernel_size - 1) * dilation) % 2 == 1


def pad_same(
    x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> torch.Tensor:
    """``x`` padded under TensorFlow's ``SAME`` rule for a conv with these settings (unchanged if none).

    One opaque call for ``torch.fx`` (see the ``wrap`` below): its padding depends on the input's size,
    which a symbolic trace does not know.
    """
    top, bottom = tf_same_pads(x.shape[-2], kernel_size[0], stride[0], dilation[0])
    left, right = tf_same_pads(x.shape[-1], kernel_size[1], stride[1], dilation[1])
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom))
    return x


torch.fx.wrap("pad_same")


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``SAME`` padding computed from the input size at run time.

    A subclass, so state_dict keys, fusing and quantization see an ordinary ``Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pad_same takes pairs (what TorchScript needs; a Conv2d's are), where torch types tuple[int, ...]
        x = pad_same(x, self.kernel_size, self.stride, self.dilation)  # type: ignore[arg-type]
        return self._conv_forward(x, self.weight, self.bias)


def create_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    """A conv whose padding follows ``padding`` ("symmetric" or "tf_same").

    Symmetric padding keeps a map's size only when the kernel spans an odd number of pixels
    (``(kernel_size - 1) * dilation`` even); other kernels need ``tf_same``, which pads one side more.
    """
    if padding not in PADDING_MODES:
        raise UsageError(f"unknown padding {padding!r}; expected one of {', '.join(PADDING_MODES)}")
    if padding == "symmetric" and (kernel_size - 1) * dilation % 2:
        raise UsageError(
            f"kernel_size {kernel_size} with dilation {dilation} spans an even number of pixels, which "
            "symmetric padding cannot centre (the map would shrink); use padding='tf_same'"
        )
    if padding == "tf_same" and needs_dynamic_padding(kernel_size, stride, dilation):
        return Conv2dSame(
            in_channels, out_channels, kernel_size, stride, 0, dilation, groups=groups, bias=bias
        )
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride,
        symmetric_padding(kernel_size, dilation),
        dilation,
        groups=groups,
        bias=bias,
    )
