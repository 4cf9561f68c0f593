"""Depthwise convolutions whose weight gradient stays fast on feature maps smaller than the kernel.

oneDNN, which runs PyTorch's CPU convolutions, has no depthwise kernel for the weight gradient when the
feature map is smaller than the kernel (a 2×2 map under a 3×3 kernel, as in the last blocks of the CIFAR
networks, or a 4×4 map under a 5×5 one); it falls back to a generic im2col + GEMM, one tiny product per
channel. On an AVX2 CPU that takes 42-49 ms for ``mobilenet_v2``'s 960-channel 2×2 layers at batch 128,
where the same sum as nine multiply-reduce passes over the (small) tensors takes about 1 ms
(``benchmarks/depthwise_gradient.py``). The trainer swaps :class:`DepthwiseConv2d` in with
:func:`fast_depthwise_gradients`; everything else (forward, input gradient, larger maps, GPUs, autocast,
tracing and export) is PyTorch's own convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import is_tracing


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class _SmallMapDepthwiseConv(torch.autograd.Function):
    """A depthwise ``conv2d`` whose weight gradient is summed tap by tap (one pass per kernel position)."""

    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
    ) -> Tensor:
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        ctx.geometry = (stride, padding, dilation)
        return F.conv2d(input, weight, bias, stride, padding, dilation, input.shape[1])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        input, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_input = grad_bias = grad_weight = None
        if needs_input or (needs_bias and ctx.has_bias):
            grad_input, _, grad_bias = torch.ops.aten.convolution_backward(
                grad,
                input,
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                list(stride),
                list(padding),
                list(dilation),
                False,
                [0, 0],
                input.shape[1],
                [needs_input, False, needs_bias and ctx.has_bias],
            )
        if needs_weight:
            grad_weight = depthwise_weight_gradient(grad, input, weight, stride, padding, dilation)
        return grad_input, grad_weight, grad_bias, None, None, None


def depthwise_weight_gradient(
    grad: Tensor,
    input: Tensor,
    weight: Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """The weight gradient of a depthwise convolution (one filter per channel), one kernel tap at a time.

    Tap ``(i, j)`` of channel ``c`` is the sum over images and output positions of the output gradient
    times the input it saw through that tap: a strided view of the input, cut to the output positions
    where the tap falls inside the image (zero padding adds nothing), so each tap is one multiply-and-
    reduce over at most the output's size, and a tap that only ever sees padding costs nothing.
    """
    weight_shape = weight.shape
    weight_grad = torch.zeros_like(weight, dtype=grad.dtype)  # the weight's strides: DDP's layout contract
    rows = [
        _tap_range(i, grad.shape[-2], input.shape[-2], stride[0], padding[0], dilation[0])
        for i in range(weight_shape[-2])
    ]
    cols = [
        _tap_range(j, grad.shape[-1], input.shape[-1], stride[1], padding[1], dilation[1])
        for j in range(weight_shape[-1])
    ]
    for i, (out_rows, in_rows) in enumerate(rows):
        for j, (out_cols, in_cols) in enumerate(cols):
            if out_rows.stop > out_rows.start and out_cols.stop > out_cols.start:
                seen = input[:, :, in_rows, in_cols]
                weight_grad[:, 0, i, j] = (grad[:, :, out_rows, out_cols] * seen).sum((0, 2, 3))
    return weight_grad


def _tap_range(
    tap: int, out_size: int, in_size: int, stride: int, padding: int, dilation: int
) -> tuple[slice, slice]:
    """Output positions whose input through ``tap`` lies inside the image, and those inputs, along one axis.

    Output ``o`` reads input ``o * stride + tap * dilation - padding``; keep the ``o`` where it is in
    ``[0, in_size)``.
    """
    offset = tap * dilation - padding
    first = max(0, -(offset // stride))  # smallest o with o * stride + offset >= 0
    last = min(out_size - 1, (in_size - 1 - offset) // stride)  # largest o with the input < in_size
    if last < first:
        return slice(0, 0), slice(0, 0)
    start = first * stride + offset
    return slice(first, last + 1), slice(start, start + (last - first) * stride + 1, stride)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == in_channels == out_channels`` that trains fast on small maps.

    Same parameters, state dict and outputs as the ``nn.Conv2d`` it replaces; only the weight
    gradient of a float32 CPU batch whose map is smaller than the kernel takes the tap-by-tap sum.
    """

    def forward(self, input: Tensor) -> Tensor:
        if self._small_map_gradient(input):
            return _SmallMapDepthwiseConv.apply(
                input,
                self.weight,
                self.bias,
                _pair(self.stride),
                _pair(self.padding),
                _pair(self.dilation),
            )
        return super().forward(input)

    def _small_map_gradient(self, input: Tensor) -> bool:
        kernel_h, kernel_w = _pair(self.kernel_size)
        return (
            self.training
            and input.dim() == 4
            and (input.shape[-2] < kernel_h or input.shape[-1] < kernel_w)
            and self.weight.requires_grad
            and torch.is_grad_enabled()
            and input.device.type == "cpu"
            and input.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not is_tracing()
        )


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )


def fast_depthwise_gradients(model: nn.Module, enabled: bool = True) -> int:
    """Turn every depthwise ``nn.Conv2d`` of ``model`` into :class:`DepthwiseConv2d` (or back).

    For training on CPUs. The modules keep their parameters and names (only their class changes), so
    optimizers, hooks and checkpoints are unaffected. Returns how many were switched. Quantizers match
    convolutions by exact type: switch back (``enabled=False``) before capturing the model for them.
    """
    source, target = (nn.Conv2d, DepthwiseConv2d) if enabled else (DepthwiseConv2d, nn.Conv2d)
    switched = 0
    for module in model.modules():
        if type(module) is source and _is_depthwise(module):
            module.__class__ = target
            switched += 1
    return switched
