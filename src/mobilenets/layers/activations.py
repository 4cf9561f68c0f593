"""Activation lookup by name, so configs and the CLI can name activations as strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError

ActivationFactory = Callable[[], nn.Module]


class _ClampKeepingOutput(torch.autograd.Function):
    """ReLU6 in place, saving its output for the backward instead of a copy of its input."""

    @staticmethod
    def forward(ctx: Any, input: Tensor) -> Tensor:
        ctx.mark_dirty(input)
        input.clamp_(0.0, 6.0)
        ctx.save_for_backward(input)
        return input

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (output,) = ctx.saved_tensors
        # Zero where the output sits on a bound (0 or 6): exactly where the input was <= 0 or >= 6.
        return torch.ops.aten.hardtanh_backward(grad, output, 0.0, 6.0)


def is_tracing() -> bool:
    """True while TorchScript, ``torch.compile``, ``torch.export`` or FX records the model's ops."""
    return bool(
        torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.compiler.is_exporting()
        or torch.fx._symbolic_trace.is_fx_symbolic_tracing()
    )


class ReLU6(nn.ReLU6):
    """``nn.ReLU6`` whose in-place form trains without copying its input.

    Autograd's in-place ``hardtanh_`` keeps a clone of the input for the backward. The output
    tells as much (the gradient passes where 0 < output < 6, as where 0 < input < 6), so when
    gradients flow this clamps in place and keeps only the output: no copy, one activation tensor
    fewer than out of place, same numbers. Tracing, export and ``torch.compile`` see ``nn.ReLU6``'s op.
    Models are built with ``nn.ReLU6``: quantizers match activations by module type (torchao's x86
    quantizer does not fuse conv-BatchNorm-ReLU6 with a subclass, which cost QAT 20 points of top-1
    agreement here), so the trainer swaps this in with :func:`keep_relu6_outputs`.
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.inplace and not is_tracing() and torch.is_grad_enabled() and input.requires_grad:
            return _ClampKeepingOutput.apply(input)
        return super().forward(input)


def keep_relu6_outputs(model: nn.Module, enabled: bool = True) -> int:
    """Swap every ``nn.ReLU6`` of ``model`` for :class:`ReLU6` (or back, with ``enabled=False``).

    For training: no copy of each activation's input, one saved tensor fewer. Returns how many were
    swapped; ``inplace`` is kept, and the state dict does not change (activations hold no tensors).
    """
    source, target = (nn.ReLU6, ReLU6) if enabled else (ReLU6, nn.ReLU6)
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is source:
                setattr(parent, name, target(inplace=child.inplace))
                swapped += 1
    return swapped


_ACTIVATIONS: dict[str, ActivationFactory] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
    "hardswish": lambda: nn.Hardswish(inplace=True),
    "hardsigmoid": lambda: nn.Hardsigmoid(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}

# In-place activations whose backward needs their input (autograd clones it); torch's ReLU6 is a
# Hardtanh (ours is not among them: see ReLU6).
_CLONING_INPLACE = (nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)

ACTIVATION_NAMES: tuple[str, ...] = tuple(sorted(_ACTIVATIONS))


def create_activation(name: str | None) -> nn.Module:
    """Return a fresh activation module for ``name``; ``None`` gives ``nn.Identity`` (a linear layer)."""
    if name is None:
        return nn.Identity()
    if not isinstance(name, str) or name.lower() not in _ACTIVATIONS:
        raise UsageError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
    return _ACTIVATIONS[name.lower()]()


def set_inplace_activations(model: nn.Module, inplace: bool) -> int:
    """Set ``inplace`` on every hard-swish, hard-sigmoid, SiLU and torch ReLU6 of ``model``; returns how many.

    In place saves memory at inference. In training it costs time: the backward of these needs their
    input, so autograd clones it before each in-place call. The trainer runs them out of place (about
    3% faster per step, measured on MobileNetV2 with torch's ReLU6 by ``benchmarks/train_throughput.py``),
    for one more saved tensor per activation; the checkpoint is the same either way. Left alone: ReLU,
    whose backward uses its output, and our :class:`ReLU6`, which keeps its output instead of a copy.
    """
    switched = 0
    for module in model.modules():
        if isinstance(module, _CLONING_INPLACE) and not isinstance(module, ReLU6):
            module.inplace = inplace
            switched += 1
    return switched


def check_activation(name: str | None) -> None:
    """Raise ``ValueError`` unless ``name`` is a known activation (or ``None``)."""
    if name is not None and (not isinstance(name, str) or name.lower() not in _ACTIVATIONS):
        raise UsageError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
