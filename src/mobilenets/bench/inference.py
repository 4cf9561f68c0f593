"""The inference comparison ``mobilenets bench`` runs: our paths against torchvision's and ONNX Runtime's.

Every variant classifies the same input batch; all are timed interleaved in one process with the
same threads and allocator setting (see :mod:`.allocator`), and reported as ratios to
``torchvision_eager`` (torchvision's model, eager, NCHW: what most people run). The torchvision and
our variants carry the same weights. ``torchvision_ort_int8`` is ONNX Runtime's usual recipe (QDQ,
uint8 activations, int8 per-channel weights); ``ours_int8`` is ``mobilenets export --int8``'s default
(7-bit weights, which avoid u8×s8 saturation on CPUs without VNNI; see :mod:`mobilenets.deploy.quantize`).
int8 variants are calibrated on random inputs: their *speed*
does not depend on the ranges (accuracy is measured by ``benchmarks/int8_accuracy.py``). ONNX
Runtime sessions keep their default settings (worker threads spin between operators); since the
runtimes' spinning thread pools slow whichever variant runs next, variants take turns in blocks of
5 timed calls, each after 2 untimed ones.
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..models import create_model
from .latency import LatencyResult, measure_interleaved
from .machine import cpu_description

VARIANTS = (
    "torchvision_eager",
    "torchvision_compile",
    "torchvision_ort_fp32",
    "torchvision_ort_int8",
    "ours_eager",
    "ours_optimize",
    "ours_ort_fp32",
    "ours_int8",
)
# On request only (``--variants``): int8 in PyTorch itself (torchao's PT2E flow, Inductor-compiled;
# calibrated on random inputs: speed only, accuracy in ``benchmarks/int8_pt2e.py``). Its compile on the
# first call (10-15 s per batch size on 2 cores) falls in the warm-up.
EXTRA_VARIANTS = ("ours_pt2e_int8",)
ALL_VARIANTS = VARIANTS + EXTRA_VARIANTS
REFERENCE = "torchvision_eager"
CALIBRATION_IMAGES = 8


@dataclass(frozen=True)
class BenchResult:
    """Timings of every variant that could run, and why the others could not."""

    model: str
    batch: int
    resolution: int
    threads: int
    allocator: str
    results: dict[str, LatencyResult]
    skipped: dict[str, str]
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # see :mod:`.rss`

    def to_dict(self) -> dict[str, Any]:
        reference = self.results.get(REFERENCE)
        variants: dict[str, Any] = {}
        for name, result in self.results.items():
            variants[name] = {
                "median_ms": result.median_ms,
                "iqr_ms": result.spread_ms,
                "per_image_ms": result.median_ms / self.batch,
                "speedup_vs_torchvision_eager": None
                if reference is None
                else reference.median_ms / result.median_ms,
                **self.memory.get(name, {}),
            }
        return {
            "model": self.model,
            "batch": self.batch,
            "resolution": self.resolution,
            "threads": self.threads,
            "allocator": self.allocator,
            "cpu": cpu_description(),
            "repeats": len(next(iter(self.results.values())).times_ms) if self.results else 0,
            **variants,
            "skipped": self.skipped,
        }


def _ort(path: Path, threads: int) -> Callable[[torch.Tensor], Any]:
    from ..deploy.onnx_export import ort_session

    session = ort_session(path, threads, spinning=True)  # ONNX Runtime as people run it: spinning on
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> Any:
        return session.run(None, {name: x.numpy()})

    return run


def _eager(model: nn.Module, x: torch.Tensor, *, channels_last: bool) -> torch.Tensor:
    if channels_last:  # our eager path takes the user's NCHW batch and converts it, every call
        x = x.contiguous(memory_format=torch.channels_last)
    return model(x)


def _torchvision(model_name: str, ours: nn.Module) -> nn.Module | None:
    """torchvision's model of the same name with our model's weights, or None if it has none."""
    import torchvision

    from ..weights.torchvision_keys import torchvision_key_map

    builder = getattr(torchvision.models, model_name, None)
    if builder is None:
        return None
    reference: nn.Module = builder(weights=None).eval()
    key_map = {ours_key: theirs for theirs, ours_key in torchvision_key_map(ours).items()}  # type: ignore[arg-type]
    reference.load_state_dict({key_map[k]: v for k, v in ours.state_dict().items() if k in key_map})
    return reference


def build_variants(
    model_name: str,
    *,
    batch: int,
    resolution: int,
    threads: int,
    workdir: Path,
    only: tuple[str, ...] = VARIANTS,
) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """Zero-argument callables, one per variant, on one shared random batch; and skipped variants."""
    from ..deploy import export_onnx, optimize, quantize_onnx

    torch.manual_seed(0)
    ours = create_model(model_name).eval()
    x = torch.randn(batch, 3, resolution, resolution)
    calibration = torch.randn(CALIBRATION_IMAGES, 3, resolution, resolution)
    reference = _torchvision(model_name, ours)
    variants: dict[str, Callable[[], object]] = {}
    skipped: dict[str, str] = {}
    for name in only:
        if name.startswith("torchvision") and reference is None:
            skipped[name] = f"torchvision has no {model_name}"
            continue
        source = reference if name.startswith("torchvision") else ours
        assert source is not None  # internal invariant: checked just above
        if name == "torchvision_eager":
            variants[name] = functools.partial(_eager, source, x, channels_last=False)
        elif name == "ours_eager":
            channels_last = copy.deepcopy(source).to(memory_format=torch.channels_last)
            variants[name] = functools.partial(_eager, channels_last, x, channels_last=True)
        elif name == "torchvision_compile":
            variants[name] = functools.partial(torch.compile(source), x)
        elif name == "ours_optimize":
            fast = optimize(source, resolution=resolution)
            variants[name] = functools.partial(_eager, fast, x, channels_last=False)
        elif name == "ours_pt2e_int8":
            from ..deploy.pt2e import compile_int8, quantize_pt2e

            int8 = quantize_pt2e(source, [calibration], resolution=resolution)
            variants[name] = functools.partial(compile_int8(int8), x)
        else:  # ONNX Runtime: fp32, or int8 quantized from it
            side = name.split("_")[0]
            fp32 = workdir / f"{side}_{model_name}_{resolution}.onnx"
            if not fp32.exists():
                export_onnx(source, fp32, resolution=resolution, dynamic_batch=True)
            path = fp32
            if name.endswith("int8"):
                path = fp32.with_suffix(".int8.onnx")
                if not path.exists():  # ONNX Runtime's usual s8 weights for theirs; our int7 default
                    weights = "int8" if side == "torchvision" else "int7"
                    quantize_onnx(fp32, path, calibration, method="minmax", weight_dtype=weights)
            variants[name] = functools.partial(_ort(path, threads), x)
    return variants, skipped


def run_bench(
    model_name: str = "mobilenet_v2",
    *,
    batch: int = 1,
    resolution: int = 224,
    threads: int = 2,
    repeats: int = 30,
    warmup: int = 5,
    only: tuple[str, ...] = VARIANTS,
    allocator: str = "system malloc",
    workdir: str | os.PathLike[str] | None = None,
) -> BenchResult:
    """Build the variants and time them interleaved (medians of ``repeats`` after ``warmup``)."""
    unknown = sorted(set(only) - set(ALL_VARIANTS))
    if unknown:
        raise UsageError(
            f"unknown bench variant(s) {', '.join(unknown)}; expected from {', '.join(ALL_VARIANTS)}"
        )
    for label, value, low in (("batch", batch, 1), ("threads", threads, 1), ("repeats", repeats, 1)):
        if value < low:
            raise UsageError(f"{label} must be >= {low}, got {value}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            variants, skipped = build_variants(
                model_name,
                batch=batch,
                resolution=resolution,
                threads=threads,
                workdir=Path(workdir) if workdir else Path(tmp),
                only=only,
            )
            results = measure_interleaved(
                variants, repeats=repeats, warmup=warmup, threads=threads, settle=2, block=5
            )
    finally:
        torch.set_num_threads(previous)
    return BenchResult(model_name, batch, resolution, threads, allocator, results, skipped)
