"""Activation lookup by name, so configs and the CLI can name activations as strings."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ActivationFactory = Callable[[], nn.Module]

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

# In-place activations whose backward needs their input (autograd clones it); ReLU6 is a Hardtanh.
_CLONING_INPLACE = (nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU)

ACTIVATION_NAMES: tuple[str, ...] = tuple(sorted(_ACTIVATIONS))


def create_activation(name: str | None) -> nn.Module:
    """Return a fresh activation module for ``name``; ``None`` gives ``nn.Identity`` (a linear layer)."""
    if name is None:
        return nn.Identity()
    if not isinstance(name, str) or name.lower() not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
    return _ACTIVATIONS[name.lower()]()


def set_inplace_activations(model: nn.Module, inplace: bool) -> int:
    """Set ``inplace`` on every ReLU6, hard-swish, hard-sigmoid and SiLU of ``model``; returns how many.

    In place saves memory at inference. In training it costs time: the backward of these needs their
    input, so autograd clones it before each in-place call (ReLU's backward uses its output: no clone,
    left alone). The trainer runs them out of place: about 3% faster per MobileNetV2 step on 2 cores
    (``benchmarks/train_throughput.py``), for one more saved tensor per activation; the checkpoint is
    the same either way.
    """
    switched = 0
    for module in model.modules():
        if isinstance(module, _CLONING_INPLACE):
            module.inplace = inplace
            switched += 1
    return switched


def check_activation(name: str | None) -> None:
    """Raise ``ValueError`` unless ``name`` is a known activation (or ``None``)."""
    if name is not None and (not isinstance(name, str) or name.lower() not in _ACTIVATIONS):
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
