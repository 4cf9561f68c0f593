"""Training's activation memory: what autograd keeps from the forward pass for the backward."""

from __future__ import annotations

from collections.abc import Callable

import torch


def saved_for_backward_bytes(model: Callable[[torch.Tensor], object], inputs: torch.Tensor) -> int:
    """Bytes of the distinct tensors autograd saves while ``model(inputs)`` runs with gradients on.

    Tensors sharing storage count once (a view of a saved tensor costs nothing more). This is the
    memory a training step holds between its forward and its backward, besides weights and optimizer
    state: it is what in-place activations and smaller batches save.
    """
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs)
    return sum(storages.values())
