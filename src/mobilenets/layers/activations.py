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

ACTIVATION_NAMES: tuple[str, ...] = tuple(sorted(_ACTIVATIONS))


def create_activation(name: str | None) -> nn.Module:
    """Return a fresh activation module for ``name``; ``None`` gives ``nn.Identity`` (a linear layer)."""
    if name is None:
        return nn.Identity()
    if not isinstance(name, str) or name.lower() not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
    return _ACTIVATIONS[name.lower()]()


def check_activation(name: str | None) -> None:
    """Raise ``ValueError`` unless ``name`` is a known activation (or ``None``)."""
    if name is not None and (not isinstance(name, str) or name.lower() not in _ACTIVATIONS):
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_NAMES)}")
