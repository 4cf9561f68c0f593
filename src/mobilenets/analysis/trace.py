"""Record the calls of selected modules during one forward pass, in the order they finish."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModuleCall:
    """One finished call of a module: its name (the model's class name for the model itself), the
    tensors it took and the tensor it returned."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor


def record_calls(
    model: nn.Module, example: torch.Tensor, select: Callable[[str, nn.Module], bool]
) -> list[ModuleCall]:
    """Run ``model(example)`` without gradients and return the calls of every module ``select`` accepts."""
    calls: list[ModuleCall] = []
    handles = []
    for name, module in model.named_modules():
        if not select(name, module):
            continue
        name = name or type(module).__name__  # the model itself, when it is one of the selected

        def hook(mod: nn.Module, inputs: tuple[object, ...], output: torch.Tensor, name: str = name) -> None:
            tensors = tuple(i for i in inputs if isinstance(i, torch.Tensor))
            calls.append(ModuleCall(name, mod, tensors, output))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls
