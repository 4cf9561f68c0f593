"""Peak resident memory of each ``mobilenets bench`` variant, each measured in a fresh process.

Variants share one process while they are timed, so their memory cannot be told apart there. Here each
variant is built alone in a child process (``python -m mobilenets.bench.rss``) with the same model,
batch, threads and allocator setting; once it is built, the kernel's high-water mark is reset
(``/proc/self/clear_refs``) and two warm-up calls and ``runs`` more follow. Reported per variant:
``rss_mb``, the resident set once built (interpreter, libraries, weights), and ``peak_rss_mb``, its
high-water mark over the calls (activations, runtime caches and, for ``torch.compile``, compiling on
the first call): what a process serving this model needs. ONNX files are exported (and calibrated)
first by a separate process, so the measured ones only load them.
Linux only (``/proc``); elsewhere every variant is reported as skipped.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
WARMUP_CALLS = 2


def _status_mb(key: str) -> float:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024 / 1e6
    raise UsageError(f"{key} missing from {_STATUS}")


def measure_here(
    model_name: str, variant: str, *, batch: int, resolution: int, threads: int, runs: int, workdir: Path
) -> dict[str, Any]:
    """Build ``variant`` in this process and measure it (the child's side of :func:`peak_rss`)."""
    from .inference import build_variants

    torch.set_num_threads(threads)
    variants, skipped = build_variants(
        model_name, batch=batch, resolution=resolution, threads=threads, workdir=workdir, only=(variant,)
    )
    if variant in skipped:
        return {"skipped": skipped[variant]}
    call = variants[variant]
    gc.collect()
    built = _status_mb("VmRSS:")
    _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
    with torch.inference_mode():
        for _ in range(WARMUP_CALLS + runs):
            call()
    return {"rss_mb": built, "peak_rss_mb": _status_mb("VmHWM:")}


def peak_rss(
    model_name: str,
    variants: tuple[str, ...],
    *,
    batch: int,
    resolution: int,
    threads: int,
    runs: int = 5,
    system_malloc: bool = False,
) -> dict[str, dict[str, Any]]:
    """``{variant: {"rss_mb", "peak_rss_mb"}}`` (or ``{"skipped": why}``), one fresh process each."""
    if not _CLEAR_REFS.exists() or not _STATUS.exists():
        reason = "peak RSS needs Linux's /proc/self/clear_refs and VmHWM"
        return {variant: {"skipped": reason} for variant in variants}
    results: dict[str, dict[str, Any]] = {}
    onnx_variants = ",".join(variant for variant in variants if "ort" in variant or variant == "ours_int8")
    with tempfile.TemporaryDirectory() as tmp:  # exported ONNX files are shared between the children
        for variant in ([f"prepare:{onnx_variants}"] if onnx_variants else []) + list(variants):
            command = [sys.executable, "-m", "mobilenets.bench.rss", model_name, variant, "--workdir", tmp]
            command += ["--batch", str(batch), "--resolution", str(resolution)]
            command += ["--threads", str(threads), "--runs", str(runs)]
            command += ["--system-malloc"] if system_malloc else []
            done = subprocess.run(command, capture_output=True, text=True)
            if variant.startswith("prepare:"):
                continue  # a failure shows up again, with its message, in the variants that need the file
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results[variant] = {"skipped": f"measuring process failed: {last[:200]}"}
                continue
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="peak RSS of one bench variant (a child of peak_rss)")
    parser.add_argument("model")
    parser.add_argument("variant")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--resolution", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--system-malloc", action="store_true")
    args = parser.parse_args(argv)
    if args.variant.startswith("prepare:"):  # export the ONNX files of these variants, measure nothing
        from .inference import build_variants

        only = tuple(args.variant.removeprefix("prepare:").split(","))
        build_variants(
            args.model, batch=1, resolution=args.resolution, threads=1, workdir=args.workdir, only=only
        )
        return 0
    if not args.system_malloc:
        from .allocator import reuse_freed_memory

        reuse_freed_memory()
    result = measure_here(
        args.model,
        args.variant,
        batch=args.batch,
        resolution=args.resolution,
        threads=args.threads,
        runs=args.runs,
        workdir=args.workdir,
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
