"""Latency of variants sharing one process: warm-up, then the median of repeated runs, interleaved.

Interleaving (A, B, C, A, B, C, ...) rather than timing A fully then B spreads the noise of a shared
machine evenly over the variants, so their ratios are fair even when absolute times drift. That holds
for variants of one runtime (the demo's PyTorch forms, ``benchmarks/model_latency.py``). Variants of
different runtimes disturb each other in one process (a runtime's spinning worker threads slow the
next variant), so ``mobilenets bench`` times each alone in a fresh process instead
(:mod:`.inference`); :class:`LatencyResult` summarises both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UsageError


@dataclass(frozen=True)
class LatencyResult:
    """Repeated timings of one variant, in milliseconds."""

    name: str
    times_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    @property
    def spread_ms(self) -> float:
        """Interquartile range: how noisy the median is (0 for a single timing; from two on, quartiles
        by the ``exclusive`` method, the range for two or three timings)."""
        if len(self.times_ms) < 2:
            return 0.0
        if len(self.times_ms) <= 3:  # the exclusive method would extrapolate past two timings
            return max(self.times_ms) - min(self.times_ms)
        q = statistics.quantiles(self.times_ms, n=4)
        return q[2] - q[0]


def prepare_for_inference(model: nn.Module, *, channels_last: bool = True) -> nn.Module:
    """Eval mode, and channels_last memory format (depthwise convs run far faster in it on CPU)."""
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def measure_interleaved(
    variants: dict[str, Callable[[], object]],
    *,
    repeats: int = 30,
    warmup: int = 3,
    threads: int | None = None,
    settle: int = 0,
    block: int = 1,
) -> dict[str, LatencyResult]:
    """Time each zero-argument callable ``repeats`` times, interleaved, after ``warmup`` untimed rounds.

    Variants take turns in blocks of ``block`` consecutive timed calls, each block preceded by
    ``settle`` untimed calls. When variants come from different runtimes (PyTorch's OpenMP pool, each
    ONNX Runtime session's pool), the threads of the one that just ran keep spinning for a while and
    slow the next one down; settling calls and blocks keep that out of the medians.
    """
    if repeats < 1 or warmup < 0 or settle < 0 or block < 1:
        raise UsageError(
            f"repeats and block must be >= 1, warmup and settle >= 0; got {repeats}, {block}, {warmup} "
            f"and {settle}"
        )
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                for fn in variants.values():
                    fn()
            times: dict[str, list[float]] = {name: [] for name in variants}
            for first in range(0, repeats, block):
                for name, fn in variants.items():
                    for _ in range(settle):
                        fn()
                    for _ in range(min(block, repeats - first)):
                        start = time.perf_counter()
                        fn()
                        times[name].append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
    return {name: LatencyResult(name, tuple(values)) for name, values in times.items()}
