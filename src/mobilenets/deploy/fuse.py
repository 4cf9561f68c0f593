"""Fold every BatchNorm into the convolution before it, for inference.

In eval mode ``bn(conv(x)) = γ (W x + b − μ) / √(σ² + ε) + β`` is itself a convolution with weight
``W γ / √(σ² + ε)`` and bias ``β + (b − μ) γ / √(σ² + ε)``. Folding removes a full pass over every
activation tensor, and is what runtimes and quantizers expect (a conv's int8 scale must cover the
folded weight).

A norm after a max pool (:class:`~mobilenets.layers.PooledSeparableConv` at stride 2) folds too when
every channel's scale ``γ / √(σ² + ε)`` is non-negative: an affine map that does not decrease
commutes with a maximum, ``max(s y + t) = s max(y) + t`` for ``s ≥ 0``. A channel with a negative
scale would turn the maximum into a minimum, so such a norm stays where it is.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import UsageError
from ..layers.conv_norm_act import ConvNormAct
from ..layers.separable import PooledSeparableConv

M = TypeVar("M", bound=nn.Module)


def fuse(model: M, *, inplace: bool = False) -> M:
    """``model`` with the BatchNorm of every ``ConvNormAct`` folded into its conv (``bn`` → Identity),
    and that of every ``PooledSeparableConv`` into its last conv where the pool allows (see above).

    Returns a fused copy in eval mode unless ``inplace``. Outputs equal the unfused model's in eval
    mode to float rounding. Units with another norm (GroupNorm) or none are left as they are. Module
    names do not change, so hooks and key maps by name still find ``conv``.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for module in fused.modules():
        if isinstance(module, ConvNormAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
        elif isinstance(module, PooledSeparableConv):
            _fold_past_pool(module)
    return fused


def _fold_past_pool(block: PooledSeparableConv) -> None:
    """Fold ``block``'s BatchNorm into its last conv when it follows no pool, or a max pool and no
    channel's scale is negative (see the module notes); otherwise leave it."""
    bn, last = block.bn, "conv_dw" if block.depthwise_last else "conv_pw"
    conv = getattr(block, last)
    if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, nn.Conv2d):
        return
    if not isinstance(block.pool, nn.Identity):
        scale = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        if not isinstance(block.pool, nn.MaxPool2d) or bool((scale < 0).any()):
            return
    setattr(block, last, fuse_conv_bn_eval(conv, bn))
    block.bn = nn.Identity()


def out_of_place(model: nn.Module) -> nn.Module:
    """``model`` with every in-place activation (``ReLU6(inplace=True)`` and the like) out of place.

    The outputs do not change. Decomposing a program for ONNX or OpenVINO runs each in-place op through
    PyTorch's reference ops under the symbolic batch size, which took about half of an export:
    MobileNetV2 at 224 px went to ONNX in 10.6 s, 6.0 s out of place (the same graph of Conv, Clip
    and Add nodes), and to OpenVINO in 7.6 s, 3.9 s (``benchmarks/export_time.py``, 2 cores).
    """
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False  # type: ignore[assignment]
    return model


def count_batchnorms(model: nn.Module) -> int:
    """How many BatchNorm layers ``model`` still has (0 after :func:`fuse` for BatchNorm models)."""
    return sum(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules())


def folded_parameters(unit: ConvNormAct, user: str) -> tuple[nn.Parameter, nn.Parameter]:
    """The (weight, bias) of ``unit``'s BatchNorm-folded conv as frozen copies (a zero bias if it has
    none), for modules that re-run the conv piece by piece; ``user`` names them in the error raised
    when BatchNorm is not folded yet."""
    if isinstance(unit.bn, nn.modules.batchnorm._BatchNorm):
        raise UsageError(f"{user}: BatchNorm must be folded first (mobilenets.deploy.fuse)")
    if not isinstance(unit.bn, nn.Identity):
        raise UsageError(
            f"{user}: {type(unit.bn).__name__} cannot be folded into its convolution, only BatchNorm can; "
            f"build the model with norm='batchnorm'"
        )
    conv = unit.conv
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
    weight = nn.Parameter(conv.weight.detach(), requires_grad=False)
    return weight, nn.Parameter(bias.detach(), requires_grad=False)
