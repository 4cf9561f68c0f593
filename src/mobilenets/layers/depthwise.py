"""Depthwise convolutions whose training stays fast where oneDNN's CPU kernels fall back to slow paths.

oneDNN, which runs PyTorch's CPU convolutions, has no depthwise kernel for the weight gradient in two
cases, and falls back to a generic im2col + GEMM, one tiny product per channel:

- the feature map is smaller than the kernel (a 2×2 map under a 3×3 kernel, as in the last blocks of
  the CIFAR networks, or a 4×4 map under a 5×5 one). On an AVX2 CPU that takes 42-49 ms for
  ``mobilenet_v2``'s 960-channel 2×2 layers at batch 128, where the same sum as nine multiply-reduce
  passes over the (small) tensors takes about 1 ms;
- the convolution is dilated (``output_stride`` 8 or 16: segmentation backbones), whatever the map
  size. A dilated convolution at stride 1 is an ordinary one over the input's ``d × d`` interleaved
  sub-grids (each every ``d``-th row and column), so stacking the sub-grids on the batch dimension
  ("space to batch", as TensorFlow runs atrous convolutions) turns it into one that oneDNN's depthwise
  kernels take, forward and backward; a step through such a layer is several times faster.

``benchmarks/depthwise_gradient.py`` measures both. The trainer swaps :class:`DepthwiseConv2d` in with
:func:`fast_depthwise_gradients`; everything else (larger maps, GPUs, autocast, evaluation, tracing and
export) is PyTorch's own convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
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


def dilated_as_subgrids(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """A stride-1 depthwise ``conv2d`` with ``dilation``, as an undilated one over stacked sub-grids.

    Output ``o = o' d + a`` reads inputs ``o + k d - p``; with ``p = q d`` that is ``(o' + k - q) d + a``:
    position ``o' + k - q`` of sub-grid ``a`` (the rows ``a, a + d, ...``), an undilated convolution with
    padding ``q``. The input is first padded at the bottom and right to a multiple of ``d`` (zeros, which
    the dilated convolution's own padding would have read) and the result cut back. Each padding must
    be a multiple of its dilation. Plain tensor operations: autograd differentiates it as it is.
    """
    n, channels, height, width = input.shape
    channels_last = input.is_contiguous(memory_format=torch.channels_last)
    (dh, dw), (ph, pw), (kh, kw) = dilation, padding, weight.shape[-2:]
    out_h, out_w = height + 2 * ph - dh * (kh - 1), width + 2 * pw - dw * (kw - 1)
    extra_h, extra_w = -height % dh, -width % dw
    if extra_h or extra_w:
        input = F.pad(input, (0, extra_w, 0, extra_h))
    rows, cols = (height + extra_h) // dh, (width + extra_w) // dw
    grids = (  # (N, C, H, W) -> (dh·dw·N, C, H/dh, W/dw), built channels-last: one copy
        input.permute(0, 2, 3, 1)
        .reshape(n, rows, dh, cols, dw, channels)
        .permute(2, 4, 0, 1, 3, 5)
        .reshape(dh * dw * n, rows, cols, channels)
        .permute(0, 3, 1, 2)
    )
    out = F.conv2d(grids, weight, bias, 1, (ph // dh, pw // dw), 1, channels)
    rows, cols = out.shape[-2:]
    interleaved = (  # back: output row o' of sub-grid a is row o' dh + a
        out.permute(0, 2, 3, 1)
        .reshape(dh, dw, n, rows, cols, channels)
        .permute(2, 3, 0, 4, 1, 5)
        .reshape(n, rows * dh, cols * dw, channels)
        .permute(0, 3, 1, 2)
    )
    layout = torch.channels_last if channels_last else torch.contiguous_format  # the input's
    return interleaved[:, :, :out_h, :out_w].contiguous(memory_format=layout)


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == in_channels == out_channels`` that trains fast on CPUs.

    Same parameters, state dict and outputs as the ``nn.Conv2d`` it replaces. Only while training, in
    float32 on the CPU: a map smaller than the kernel takes the tap-by-tap weight gradient; a dilated
    convolution at stride 1 runs over stacked sub-grids (or, when those are smaller than the kernel,
    takes the tap-by-tap weight gradient).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        if not _is_depthwise(self):
            raise UsageError(
                f"DepthwiseConv2d is depthwise: groups == in_channels == out_channels > 1, got "
                f"in_channels={in_channels}, out_channels={out_channels}, groups={self.groups} "
                "(use nn.Conv2d for other groupings)"
            )

    def forward(self, input: Tensor) -> Tensor:
        path = self._training_path(input)
        if path == "taps":
            return _SmallMapDepthwiseConv.apply(
                input,
                self.weight,
                self.bias,
                _pair(self.stride),
                _pair(self.padding),
                _pair(self.dilation),
            )
        if path == "subgrids":
            return dilated_as_subgrids(
                input, self.weight, self.bias, _pair(self.padding), _pair(self.dilation)
            )
        return super().forward(input)

    def _training_path(self, input: Tensor) -> str | None:
        """``"taps"``, ``"subgrids"``, or None for PyTorch's own convolution."""
        if not (
            self.training
            and input.dim() == 4
            and input.shape[1] == self.in_channels  # else PyTorch's convolution names the mismatch
            and self.weight.requires_grad
            and torch.is_grad_enabled()
            and input.device.type == "cpu"
            and input.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not is_tracing()
        ):
            return None
        (kh, kw), (dh, dw) = _pair(self.kernel_size), _pair(self.dilation)
        height, width = input.shape[-2:]
        if height < kh or width < kw:
            return "taps"
        (ph, pw), stride = _pair(self.padding), _pair(self.stride)
        if (dh, dw) == (1, 1) or stride != (1, 1) or ph % dh or pw % dw:
            return None
        if -(-height // dh) < kh or -(-width // dw) < kw:  # sub-grids smaller than the kernel
            return "taps"
        return "subgrids"


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
