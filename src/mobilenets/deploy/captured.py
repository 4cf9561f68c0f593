"""What captured (exported, reloaded or int8) models share: a module wrapper and the batch-size limit."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError

MAX_BATCH = 4096  # the largest batch a dynamic-batch program accepts


def check_batch(x: torch.Tensor, resolution: int | None, what: str) -> None:
    """A clear error unless ``x`` is an (N, 3, R, R) batch for a file exported at ``resolution`` R
    (a file baked to one input shape would fail inside its runtime, each runtime in its own words)."""
    if resolution is not None and (x.dim() != 4 or tuple(x.shape[1:]) != (3, resolution, resolution)):
        raise UsageError(
            f"{what} takes a float32 NCHW batch of shape (N, 3, {resolution}, {resolution}); "
            f"got {list(x.shape)}"
        )


def check_threads(threads: int | None) -> None:
    """A clear error unless ``threads`` is None (the runtime's choice) or a whole number >= 1."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(
            f"threads must be a whole number >= 1 (or None: the runtime's choice), got {threads!r}"
        )


def check_not_empty(x: torch.Tensor, what: str) -> None:
    """A clear error for an empty batch, which runtimes fail on each in its own way. Not part of
    :func:`check_batch`, which ``torch.export`` traces: a test of the batch size there would constrain
    an exported program's free batch dimension."""
    if len(x) == 0:
        raise UsageError(f"{what} got an empty batch (shape {list(x.shape)}); give it at least one image")


class ExportedClassifier(nn.Module):
    """A captured model (a reloaded ``.pt`` / ``.pt2`` file, an int8 graph) that ``.eval()`` chains accept.

    ``torch.export`` programs raise on ``train()``/``eval()``; what we capture is captured in eval
    mode, so ``eval()`` is a no-op here and ``train()`` refuses. A program captured with a fixed batch
    size (``fixed_batch``) runs bigger batches in pieces of that size, as ONNX files do. With its
    ``resolution``, another input shape is refused clearly.
    """

    def __init__(
        self, inner: nn.Module, *, fixed_batch: int | None = None, resolution: int | None = None
    ) -> None:
        super().__init__()
        self.inner = inner
        self.fixed_batch = fixed_batch
        self.resolution = resolution
        self.training = False

    def train(self, mode: bool = True) -> ExportedClassifier:
        if mode:
            raise UsageError("an exported or int8 model is for inference only; train the float model instead")
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_batch(x, self.resolution, "this exported model")
        # Captured in float32; the ONNX, ExecuTorch and OpenVINO files convert other dtypes too.
        if x.dtype != torch.float32:
            x = x.float()
        step = self.fixed_batch
        # A dynamic batch is capped at MAX_BATCH: bigger ones run in pieces (not while being exported).
        if step is None and not torch.compiler.is_exporting() and len(x) > MAX_BATCH:
            return torch.cat([self.inner(piece) for piece in x.split(MAX_BATCH)])
        if step is None or len(x) == step:
            out: torch.Tensor = self.inner(x)
            return out
        check_not_empty(x, "this exported model")
        if len(x) % step:
            raise UsageError(f"this model takes batches of {step}; got {len(x)} images")
        return torch.cat([self.inner(x[i : i + step]) for i in range(0, len(x), step)])
