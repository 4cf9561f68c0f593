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
    anyway).
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

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs)
    return sum(storages.values())
