"""Frozen TorchScript graphs run with oneDNN Graph fusion: our fastest fp32 CPU inference in PyTorch.

oneDNN Graph (``torch.jit.enable_onednn_fusion``) replaces each conv + bias + activation (+ residual
add) of a frozen TorchScript graph with one fused oneDNN partition that keeps activations in the
blocked layout it picks, so a MobileNet runs as a few dozen kernels without a reorder or a Python
call between them: the per-operator overhead that dominates at batch 1.

TorchScript specializes a graph to the first input shape it profiles and falls back to an unfused
path for any other shape, so :class:`OneDNNGraph` traces one graph per input shape (at most
``max_shapes``, least recently used dropped) from the BatchNorm-folded eager model it keeps.

Where oneDNN cannot build a fused partition for a shape, that shape runs as a plain frozen graph (one
warning per instance). Seen with torch 2.14.1 on an AVX-512 EPYC: mobilenet_v1/v2 at 32×32, whose last 1×1
convolutions see a 1×1 feature map, fail with "could not create a primitive descriptor for the
reorder primitive" (the packed-weight reorder of oneDNN's matmul kernel); an AVX2-only EPYC built them.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import UsageError

PROFILING_CALLS = 2  # the profiling executor records shapes on the first call and fuses on the second


@contextmanager
def onednn_fusion(enabled: bool = True) -> Iterator[None]:
    """oneDNN Graph fusion on (or off) for the block, restored after (the switch is process-wide)."""
    previous = torch.jit.onednn_fusion_enabled()
    torch.jit.enable_onednn_fusion(enabled)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(previous)


def frozen_trace(module: nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule:
    """``module`` (eval mode) traced on ``example`` and frozen: weights become graph constants."""
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of compile
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # sizes are fixed by design here
        traced = torch.jit.trace(module.eval(), example, check_trace=False)
        return torch.jit.freeze(traced)


class OneDNNGraph(nn.Module):
    """Inference through oneDNN-fused frozen graphs, one per input shape, built on first use.

    ``model`` should already be what runs best as a graph (BatchNorm folded, float32). A call with a
    new input shape costs a trace, a freeze and two profiling runs (about a second for MobileNetV2 on
    2 cores); later calls with that shape run the fused graph. Gradients are never recorded.
    """

    def __init__(self, model: nn.Module, *, max_shapes: int = 4) -> None:
        super().__init__()
        if max_shapes < 1:
            raise UsageError(f"max_shapes must be at least 1, got {max_shapes}")
        self.model = model.eval()
        self.max_shapes = max_shapes
        # shape -> (frozen graph, whether it runs with oneDNN Graph fusion)
        self._graphs: OrderedDict[tuple[int, ...], tuple[torch.jit.ScriptModule, bool]] = OrderedDict()
        self._warned = False  # about a shape oneDNN could not fuse: once per instance

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        """Input shapes with a built graph, least recently used first."""
        return list(self._graphs)

    @property
    def unfused_shapes(self) -> list[tuple[int, ...]]:
        """The shapes among :attr:`shapes` that oneDNN could not fuse (they run as plain frozen graphs)."""
        return [shape for shape, (_, fused) in self._graphs.items() if not fused]

    def _profiled(self, example: torch.Tensor, *, fused: bool) -> torch.jit.ScriptModule:
        """A frozen graph for ``example``'s shape, past its profiling runs (fused by the second)."""
        graph = frozen_trace(self.model, example)
        with onednn_fusion(fused):
            for _ in range(PROFILING_CALLS):
                graph(example)
        return graph

    def _graph(self, shape: tuple[int, ...]) -> tuple[torch.jit.ScriptModule, bool]:
        entry = self._graphs.get(shape)
        if entry is not None:
            self._graphs.move_to_end(shape)
            return entry
        example = torch.zeros(shape)
        try:
            entry = self._profiled(example, fused=True), True
        except RuntimeError as error:  # oneDNN refused a partition for this shape
            if not self._warned:
                self._warned = True
                reason = str(error).strip().splitlines()[-1].split(". Run workload")[0]
                warnings.warn(
                    f"oneDNN Graph could not fuse input shape {shape} on this CPU ({reason}); "
                    "such shapes run as plain frozen TorchScript graphs (see unfused_shapes)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            entry = self._profiled(example, fused=False), False
        self._graphs[shape] = entry
        if len(self._graphs) > self.max_shapes:
            self._graphs.popitem(last=False)
        return entry

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input = getattr(self.model, "check_input", None)
        if check_input is not None:  # a graph checks nothing: wrong channels would read as a refused fusion
            check_input(x)
        x = x.contiguous()  # one graph per shape: channels_last input is converted, not re-traced
        with torch.no_grad():
            graph, fused = self._graph(tuple(x.shape))
            with onednn_fusion(fused):
                return graph(x)
