"""What captured (exported, reloaded or int8) models share: a module wrapper and the batch-size limit."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError

MAX_BATCH = 4096  # the largest batch a dynamic-batch program accepts


class ExportedClassifier(nn.Module):
    """A captured model (a reloaded ``.pt`` / ``.pt2`` file, an int8 graph) that ``.eval()`` chains accept.

    ``torch.export`` programs raise on ``train()``/``eval()``; what we capture is captured in eval
    mode, so ``eval()`` is a no-op here and ``train()`` refuses.
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.training = False

    def train(self, mode: bool = True) -> ExportedClassifier:
        if mode:
            raise UsageError("an exported or int8 model is for inference only; train the float model instead")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.inner(x)
        return out
