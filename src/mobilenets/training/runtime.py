"""How a run uses its device: the autocast dtype, and seeds with (optionally) deterministic kernels."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from ..errors import UsageError
from .config import TrainConfig


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: plain fp32).

    ``auto`` uses bf16 on GPUs that support it (else fp16) and fp32 on every CPU. bf16 autocast trains
    MobileNets slower than fp32 on each CPU measured (``benchmarks/train_throughput.py --reuse``): 10× on
    an EPYC without bf16 instructions, 0.65-0.84× the images/s with AVX512-BF16, and still 0.55-0.65×
    with AMX tiles (Sapphire Rapids), where oneDNN's bf16 depthwise-convolution backward takes 8.6-12.5× its
    fp32 time and outweighs the faster 1×1 convolutions and batch norm. A network of narrow depthwise
    and wide 1×1 convolutions gains instead (``cifar_separable``: 1.5-1.8× with AVX512-BF16,
    ``benchmarks/autocast_speed.py``), so ask for ``bf16`` there.
    """
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise UsageError("precision 'fp16' needs a CUDA device; on CPU use 'bf16' or 'fp32'")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


@contextlib.contextmanager
def kernel_settings_restored() -> Iterator[None]:
    """Put back the process-wide settings a run changes (deterministic algorithms, cuDNN's autotuner):
    a deterministic run must not leave later work in this process on slow or refusing kernels."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def configure_reproducibility(config: TrainConfig) -> None:
    """Seed torch; in deterministic mode forbid nondeterministic kernels (slower on GPU, exact repeats)."""
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
