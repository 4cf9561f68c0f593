"""The inference comparison ``mobilenets bench`` runs: our paths against torchvision's and ONNX Runtime's.

Method. A preparing step (:mod:`.prepare`) writes, once, everything the variants load: the input
batch, the weights (ours and the same in torchvision's layout), ONNX exports and int8 calibrations.
Then every variant is timed alone in a fresh process (:mod:`.fresh`, :mod:`.child`): the same
PyTorch and ONNX Runtime thread count and the same allocator setting (:mod:`.allocator`) in each,
applied inside that process; ``warmup`` untimed calls (where ``torch.compile`` and the PT2E int8
program compile), then ``repeats`` timed ones. Variants take turns over ``rounds``, a new process
each turn, in balanced orders over the rounds (:mod:`.rounds`). Reported per variant: the median and
interquartile range of all its timed calls over all rounds, each round's median, its resident memory
and peak, and the ratio to ``torchvision_eager`` (torchvision's model, eager, NCHW: what most people
run). A variant whose spread is large next to its median gets a warning: the machine was busy.

Why separate processes: ONNX Runtime's worker threads spin between operators (its default, kept
here), and a session's spinning threads, or PyTorch's, slowed whichever variant ran next in the same
process; interleaved in one process, ONNX Runtime int8 once came out slower than fp32 while each file
alone ran about twice as fast in int8.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from .child import ChildReport, ChildSpec
from .fresh import TimingProcesses, start_method
from .latency import LatencyResult
from .machine import cpu_description
from .prepare import prepare
from .rounds import run_rounds
from .variants import ALL_VARIANTS, EXTRA_VARIANTS, REFERENCE, VARIANTS, check_variants
from .workfiles import WorkFiles, calibration_tag

__all__ = [
    "ALL_VARIANTS",
    "EXTRA_VARIANTS",
    "REFERENCE",
    "VARIANTS",
    "BenchResult",
    "run_bench",
]

ROUNDS = 5
REPEATS = 20
WARMUP = 5
NOISY_SPREAD = 0.25  # interquartile range over median above which a variant's timings are flagged


@dataclass(frozen=True)
class BenchResult:
    """The timing processes of every variant that could run, in round order; why the others could not."""

    model: str
    batch: int
    resolution: int
    threads: int
    rounds: int
    repeats: int
    warmup: int
    reports: dict[str, tuple[ChildReport, ...]]
    skipped: dict[str, str] = field(default_factory=dict)
    start_method: str = ""

    @property
    def results(self) -> dict[str, LatencyResult]:
        """Each variant's timed calls of all rounds together."""
        return {
            name: LatencyResult(name, tuple(t for report in runs for t in report.times_ms))
            for name, runs in self.reports.items()
        }

    @property
    def allocator(self) -> str:
        """The allocator setting the timing processes applied."""
        settings = dict.fromkeys(report.allocator for runs in self.reports.values() for report in runs)
        return "; ".join(settings) or "no variant was timed"

    @property
    def noisy(self) -> dict[str, float]:
        """Each variant whose interquartile range is over :data:`NOISY_SPREAD` of its median, with that
        fraction: the machine was busy while it was timed."""
        return {
            name: result.spread_ms / result.median_ms
            for name, result in self.results.items()
            if result.spread_ms > NOISY_SPREAD * result.median_ms
        }

    @property
    def warnings(self) -> list[str]:
        """One line for each variant whose interquartile range is large next to its median."""
        lines = []
        for name, result in self.results.items():
            if name in self.noisy:
                lines.append(
                    f"{name}: its timings spread over {result.spread_ms:.2f} ms (interquartile range), "
                    f"{result.spread_ms / result.median_ms:.0%} of its median {result.median_ms:.2f} ms; "
                    "the machine was busy: rerun it idle, or with more --rounds"
                )
        return lines

    def _row(self, name: str, result: LatencyResult, reference: LatencyResult | None) -> dict[str, Any]:
        runs = self.reports[name]
        rss = [report.rss_mb for report in runs if report.rss_mb is not None]
        peaks = [report.peak_rss_mb for report in runs if report.peak_rss_mb is not None]
        return {
            "median_ms": result.median_ms,
            "iqr_ms": result.spread_ms,
            "per_image_ms": result.median_ms / self.batch,
            "speedup_vs_torchvision_eager": None
            if reference is None
            else reference.median_ms / result.median_ms,
            "per_round_median_ms": [statistics.median(report.times_ms) for report in runs],
            "rss_mb": statistics.median(rss) if rss else None,
            "peak_rss_mb": max(peaks) if peaks else None,
        }

    def to_dict(self) -> dict[str, Any]:
        results = self.results
        reference = results.get(REFERENCE)
        return {
            "model": self.model,
            "batch": self.batch,
            "resolution": self.resolution,
            "threads": self.threads,
            "allocator": self.allocator,
            "cpu": cpu_description(),
            "method": f"each variant alone in a fresh process ({self.start_method}), "
            "variants taking turns over rounds in balanced orders (a Williams design)",
            "rounds": self.rounds,
            "repeats": self.repeats,
            "warmup": self.warmup,
            **{name: self._row(name, result, reference) for name, result in results.items()},
            "skipped": self.skipped,
            "warnings": self.warnings,
        }


def _check(**values: int) -> None:
    for label, value in values.items():
        if value < 1:
            raise UsageError(f"{label} must be >= 1, got {value}")


def run_bench(
    model_name: str = "mobilenet_v2",
    *,
    batch: int = 1,
    resolution: int = 224,
    threads: int = 2,
    rounds: int = ROUNDS,
    repeats: int = REPEATS,
    warmup: int = WARMUP,
    only: tuple[str, ...] = VARIANTS,
    system_malloc: bool = False,
    workdir: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
    pretrained: bool = False,
    calibration: torch.Tensor | None = None,
) -> BenchResult:
    """Prepare the variants ``only``, then time each alone in a fresh process, ``rounds`` times.

    ``repeats`` timed calls per process follow ``warmup`` untimed ones (at least 1: the first call
    compiles or initialises). ``system_malloc`` keeps glibc's default allocator in the timing
    processes. Prepared files go to ``workdir`` (reused from there when present) or a temporary
    folder. ``progress`` receives a line after preparing and after each round. ``pretrained`` times
    the model's packaged weights (int8 files calibrated on ``calibration``, else on random inputs).
    """
    variants = check_variants(only)
    _check(batch=batch, threads=threads, rounds=rounds, repeats=repeats, warmup=warmup)
    say = progress or (lambda line: None)
    with tempfile.TemporaryDirectory(prefix="mobilenets-bench-") as tmp:
        root = Path(workdir) if workdir else Path(tmp)
        files = WorkFiles(root, model_name, batch, resolution, pretrained, calibration_tag(calibration))
        started = time.perf_counter()
        skipped = prepare(files, variants, calibration)
        say(f"prepared {', '.join(variants)} in {time.perf_counter() - started:.0f} s")
        started = time.perf_counter()
        runnable = [name for name in variants if name not in skipped]

        def report_round(index: int, reports: dict[str, ChildReport]) -> None:
            nonlocal started
            medians = ", ".join(
                f"{name} {statistics.median(report.times_ms):.2f} ms" for name, report in reports.items()
            )
            say(f"round {index + 1}/{rounds} ({time.perf_counter() - started:.0f} s): {medians}")
            started = time.perf_counter()

        with TimingProcesses(files.root / "timing.log") as processes:
            reports, failed = run_rounds(
                runnable,
                rounds=rounds,
                measure=lambda name: processes.run(
                    ChildSpec(name, files, threads, repeats, warmup, system_malloc)
                ),
                progress=report_round,
            )
    return BenchResult(
        model_name,
        batch,
        resolution,
        threads,
        rounds,
        repeats,
        warmup,
        {name: tuple(runs) for name, runs in reports.items()},
        {**skipped, **failed},
        start_method(),
    )
