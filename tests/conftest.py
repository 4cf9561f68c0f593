"""Shared fixtures: small inputs keep the registry-wide tests fast on 2 cores."""

from __future__ import annotations

import pytest
import torch

import mobilenets

ALL_MODELS = mobilenets.list_models()
SMALL_RES = 64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomize_norm_stats(model: torch.nn.Module) -> None:
    """Give every BatchNorm non-trivial statistics so eval-mode comparisons test them too."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
