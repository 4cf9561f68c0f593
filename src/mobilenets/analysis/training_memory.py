"""Training's activation memory: what autograd keeps from the forward pass for the backward."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import nn


def saved_for_backward_bytes(model: Callable[[torch.Tensor], object], inputs: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves while ``model(inputs)`` runs with gradients on.

    Tensors sharing storage count once (a view of a saved tensor costs nothing more). This is the
    memory a training step holds between its forward and its backward, besides weights and optimizer
    state: it is what in-place activations and smaller batches save. When ``model`` is a module, its
    parameters and buffers are not counted, though autograd saves them too (the weights are in memory
    anyway). The model is left as it was: batch norm's running statistics are restored and the random
    state dropout draws from is forked.
    """
    resident: set[int] = set()
    if isinstance(model, nn.Module):
        tensors = itertools.chain(model.parameters(), model.buffers())
        resident = {tensor.untyped_storage().data_ptr() for tensor in tensors}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in resident:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    buffers = [(b, b.clone()) for b in model.buffers()] if isinstance(model, nn.Module) else []
    try:
        with (
            torch.random.fork_rng(devices=[inputs.device] if inputs.device.type == "cuda" else []),
            torch.enable_grad(),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        ):
            model(inputs)
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
    return sum(storages.values())
