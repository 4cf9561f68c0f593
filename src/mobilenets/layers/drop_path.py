"""Stochastic depth on a residual branch (Huang et al., 2016), as timm and torchvision apply it."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .channels import is_real


class DropPath(nn.Module):
    """In training, drop the whole branch of each sample with probability ``p``; identity in eval.

    Survivors are scaled by ``1 / (1 - p)`` so the branch's expected output is unchanged. It draws the
    same random numbers as torchvision's ``StochasticDepth(p, "row")``, and is written here so that
    building a model does not import torchvision (its import costs seconds: every model it ships).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not is_real(p) or not 0.0 <= p < 1.0:
            raise UsageError(f"drop-path rate must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        mask = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * mask.bernoulli_(survival).div_(survival)

    def extra_repr(self) -> str:
        return f"p={self.p}"
