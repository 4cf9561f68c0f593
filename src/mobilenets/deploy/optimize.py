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
    """Converts the input to channels_last before the wrapped module (callers may pass NCHW).

    ``shape``: the (C, H, W) a traced graph was built for, when it takes no other (a graph does not
    check its input, and one traced with TF-same pads would give wrong numbers at another size).
    """

    def __init__(self, inner: nn.Module, shape: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shape is not None and (x.dim() != 4 or tuple(x.shape[1:]) != self.shape):
            raise UsageError(
                f"this optimized model takes (N, {', '.join(map(str, self.shape))}) input, the shape its "
                f"graph was built for; got {tuple(x.shape)} (optimize again with another resolution)"
            )
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
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise UsageError(f"resolution must be a positive integer (the input side), got {resolution!r}")
    channels = int(getattr(model, "in_channels", 3))
    if mode == "onednn":
        graph = OneDNNGraph(fuse(model).float())
        graph(torch.zeros(1, channels, resolution, resolution))  # builds the batch-1 graph now
        return graph
    fused = fuse(model).float().to(memory_format=torch.channels_last)
    if mode == "eager":
        return _ChannelsLast(fused)
    if mode == "compile":
        return _ChannelsLast(torch.compile(fused))  # type: ignore[arg-type]
    example = torch.zeros(1, channels, resolution, resolution).contiguous(memory_format=torch.channels_last)
    check_input = getattr(fused, "check_input", None)
    if check_input is not None:  # (a trace checks nothing)
        check_input(example)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of compile
        frozen = torch.jit.optimize_for_inference(frozen_trace(fused, example))
    return _ChannelsLast(frozen, shape=(channels, resolution, resolution))
