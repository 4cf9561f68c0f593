"""Memory that survives export: ExecuTorch's planned activation arena, plain against chunked MobileNetV2.

For mobilenet_v2 at 224×224, batch 1, fp32: the plain model and the chunked models of
``mobilenets.deploy.memory_efficient`` (k chunks) lowered to ExecuTorch's portable kernels
(``export_executorch(..., delegate=False)``), where every intermediate tensor lives in the memory
planner's arena and the program states its size; the largest logit difference from the plain
PyTorch model; and the batch-1 latency of each program, in the portable kernels and delegated to
XNNPACK, each program timed alone in a fresh process (median of 7 calls for portable, whose naive
kernels take a second; 30 for XNNPACK) with 2 threads. ``mobilenets summary``'s analysed peak is
printed beside.

    python benchmarks/deployed_memory.py --markdown     # ~6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import mobilenets
from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.analysis import summarize
from mobilenets.deploy import fuse
from mobilenets.deploy.executorch_export import ExecuTorchClassifier, export_executorch
from mobilenets.deploy.memory_efficient import memory_efficient

CHUNKS: tuple[int, ...] = (4, 8, 16)
RESOLUTION = 224
OUT = Path("runs/bench/deployed_memory.json")
_TIME = """
import statistics, sys, time, torch
from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
from executorch.runtime import Runtime
_unsafe_reset_threadpool(2)
method = Runtime.get().load_program(sys.argv[1]).load_method("forward")
x = torch.randn(1, 3, {resolution}, {resolution})
method.execute((x,))
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    method.execute((x,))
    times.append(1000 * (time.perf_counter() - start))
print(statistics.median(times))
"""


def _time_alone(path: Path, calls: int) -> float:
    """Median ms of ``calls`` calls of the program in a fresh process."""
    script = _TIME.format(resolution=RESOLUTION)
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(calls)], capture_output=True, text=True, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v2").eval()
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.inference_mode():
        reference = model(x)
    analysed = summarize(model, resolution=RESOLUTION).peak_activation_bytes
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        for chunks in (1, *CHUNKS):
            variant = fuse(model) if chunks == 1 else memory_efficient(model, chunks)
            name = "plain" if chunks == 1 else f"{chunks} chunks"
            portable = export_executorch(
                variant, Path(folder) / f"p{chunks}.pte", resolution=RESOLUTION, delegate=False
            )
            delegated = export_executorch(variant, Path(folder) / f"x{chunks}.pte", resolution=RESOLUTION)
            with torch.inference_mode():
                diff = (ExecuTorchClassifier(portable.path)(x) - reference).abs().max().item()
            row = {
                "model": name,
                "arena_mb": portable.arena_bytes / 1e6,
                "max_abs_diff": diff,
                "portable_ms": _time_alone(portable.path, 7),
                "xnnpack_ms": _time_alone(delegated.path, 30),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=2) + "\n")
    plain = rows[0]

    def change(row: dict[str, Any], key: str) -> str:
        return f"{row[key] / plain[key] - 1:+.0%}"

    cells = [
        [row["model"], f"{row['arena_mb']:.2f}", f"{plain['arena_mb'] / row['arena_mb']:.2f}×",
         f"{row['max_abs_diff']:.1e}", f"{row['portable_ms']:.0f} ({change(row, 'portable_ms')})",
         f"{row['xnnpack_ms']:.2f} ({change(row, 'xnnpack_ms')})"]
        for row in rows
    ]  # fmt: skip
    header = ["model", "planned arena MB", "vs plain", "max |Δ logits|", "portable ms", "XNNPACK ms"]
    best = max(rows[1:], key=lambda row: plain["arena_mb"] / row["arena_mb"])
    ratio = plain["arena_mb"] / best["arena_mb"]
    cost = best["portable_ms"] / plain["portable_ms"] - 1
    verdict = (
        f"`mobilenets summary` analyses the plain peak at {analysed / 1e6:.2f} MB. Goal (arena ≥ 3× below "
        f"plain, ≤ 25% latency in the same runtime): {best['model']} plans {ratio:.2f}× less at {cost:+.0%} "
        f"in the portable kernels: {'met' if ratio >= 3 and cost <= 0.25 else 'not met'}."
    )
    text = f"{provenance(time.perf_counter() - started)}\n\n{table(header, cells, 'lrrrrr')}\n\n{verdict}"
    print(text)
    write_fragments(args.markdown, {"deployed-memory": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
