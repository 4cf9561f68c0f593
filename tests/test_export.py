"""Models work with channels_last, torch.jit.trace, torch.export and torch.compile."""

from __future__ import annotations

import pytest
import torch

import mobilenets
from tests.conftest import randomize_norm_stats


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_lite0"])
def test_channels_last_matches(name: str) -> None:
    model = mobilenets.create_model(name, padding="tf_same" if "lite" in name else "symmetric").eval()
    randomize_norm_stats(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        actual = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(expected, actual, atol=1e-4)


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v3_large"])
def test_jit_trace(name: str) -> None:
    model = mobilenets.create_model(name).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        assert torch.allclose(traced(x), model(x), atol=1e-5)


@pytest.mark.parametrize("padding", ["symmetric", "tf_same"])
def test_torch_export(padding: str) -> None:
    model = mobilenets.mobilenet_v2(width_mult=0.5, padding=padding).eval()
    x = torch.randn(1, 3, 64, 64)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model(x), atol=1e-5)


@pytest.mark.slow
def test_torch_compile() -> None:
    model = mobilenets.mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-4)
