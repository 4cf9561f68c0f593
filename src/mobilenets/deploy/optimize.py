"""The fastest PyTorch-native inference module we can build from a model, same outputs."""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from ..errors import UsageError
from .fuse import fuse
from .onednn_graph import OneDNNGraph, frozen_trace

OPTIMIZE_MODES = ("onednn", "jit", "eager", "compile")
Mode = Literal["onednn", "jit", "eager", "compile"]


class _ChannelsLast(nn.Module):
    """Converts the input to channels_last before the wrapped module (callers may pass NCHW)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


def optimize(model: nn.Module, *, resolution: int = 224, mode: Mode = "onednn") -> nn.Module:
    """An inference-only version of ``model``: BatchNorm folded, then a frozen graph or channels_last.

    ``mode``:

    * ``"onednn"`` (default, fastest in ``benchmarks`` on 2 CPU threads at batch 1 and 32): frozen
      TorchScript run with oneDNN Graph fusion (:class:`~.onednn_graph.OneDNNGraph`: conv + bias +
      activation + residual add fused, in the layout oneDNN picks). One graph per input shape: the
      batch-1 graph is built here, the first call with another batch size takes about a second.
    * ``"jit"``: channels_last, traced, frozen and ``torch.jit.optimize_for_inference``.
    * ``"eager"``: fold + channels_last, no graph (hookable, debuggable).
    * ``"compile"``: ``torch.compile`` of the folded channels_last model (slow first call).

    The result accepts NCHW or channels_last float32 input of any batch size at ``resolution`` and
    returns what ``model`` returns in eval mode, to float rounding.
    """
    if mode not in OPTIMIZE_MODES:
        raise UsageError(f"unknown optimize mode {mode!r}; expected one of {', '.join(OPTIMIZE_MODES)}")
    if mode == "onednn":
        graph = OneDNNGraph(fuse(model).float())
        graph(torch.zeros(1, 3, resolution, resolution))  # builds the batch-1 graph now
        return graph
    fused = fuse(model).float().to(memory_format=torch.channels_last)
    if mode == "eager":
        return _ChannelsLast(fused)
    if mode == "compile":
        return _ChannelsLast(torch.compile(fused))  # type: ignore[arg-type]
    example = torch.zeros(1, 3, resolution, resolution).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of compile
        frozen = torch.jit.optimize_for_inference(frozen_trace(fused, example))
    return _ChannelsLast(frozen)
