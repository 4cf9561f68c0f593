"""Memory that survives export: ExecuTorch's planned activation arena, plain against chunked MobileNetV2.

For mobilenet_v2 at 224×224, batch 1, fp32: the plain model and the chunked models of
``mobilenets.deploy.memory_efficient`` (k channel chunks, alone and after 8×8 spatial tiles of the
stem and the stride-4 blocks, MCUNetV2's patches) lowered to ExecuTorch's portable kernels
(``export_executorch(..., delegate=False)``), where every intermediate tensor lives in the memory
planner's arena and the program states its size; the largest logit difference from the plain
PyTorch model; and the batch-1 latency of each program, in the portable kernels and delegated to
XNNPACK, each program timed alone in a fresh process (median of 7 calls for portable, whose naive
kernels take a second; 30 for XNNPACK) with 2 threads. The programs take turns over ``--rounds``
rounds, and each is reported as the median of its rounds with their range: one round of the portable
kernels swings by half between runs on a shared VM. ``mobilenets summary``'s analysed peak is printed
beside.

    python benchmarks/deployed_memory.py --markdown     # ~8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import statistics
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

# (channel chunks, spatial tiles per side); (1, 1) is the plain model.
VARIANTS: tuple[tuple[int, int], ...] = ((1, 1), (4, 1), (8, 1), (16, 1), (4, 8), (16, 8))
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
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds, the programs taking turns")
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    started = time.perf_counter()
    torch.manual_seed(0)
    model = mobilenets.create_model("mobilenet_v2").eval()
    x = torch.randn(2, 3, RESOLUTION, RESOLUTION)
    with torch.inference_mode():
        reference = model(x)
    analysed = summarize(model, resolution=RESOLUTION).peak_activation_bytes
    rows: list[dict[str, Any]] = []
    programs: list[tuple[Path, Path]] = []
    with tempfile.TemporaryDirectory() as folder:
        for chunks, patches in VARIANTS:
            unchanged = (chunks, patches) == (1, 1)
            variant = fuse(model) if unchanged else memory_efficient(model, chunks, patches=patches)
            name = (
                "plain"
                if unchanged
                else f"{chunks} chunks" + (f" + {patches}×{patches} tiles" if patches > 1 else "")
            )
            stem = Path(folder) / f"{chunks}-{patches}"
            portable = export_executorch(
                variant, stem.with_suffix(".p.pte"), resolution=RESOLUTION, delegate=False
            )
            delegated = export_executorch(variant, stem.with_suffix(".x.pte"), resolution=RESOLUTION)
            with torch.inference_mode():
                diff = (ExecuTorchClassifier(portable.path)(x) - reference).abs().max().item()
            rows.append({"model": name, "arena_mb": portable.arena_bytes / 1e6, "max_abs_diff": diff})
            programs.append((portable.path, delegated.path))
        rounds: list[list[tuple[float, float]]] = [[] for _ in rows]
        for _ in range(args.rounds):  # the programs take turns, so a slow spell of the VM hits them all
            for times, (portable_path, delegated_path) in zip(rounds, programs, strict=True):
                times.append((_time_alone(portable_path, 7), _time_alone(delegated_path, 30)))
        for row, times in zip(rows, rounds, strict=True):
            for key, column in (("portable_ms", 0), ("xnnpack_ms", 1)):
                measured = [round_times[column] for round_times in times]
                row[key], row[f"{key}_range"] = statistics.median(measured), (min(measured), max(measured))
            print(json.dumps(row), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=2) + "\n")
    plain = rows[0]

    def change(row: dict[str, Any], key: str) -> str:
        return f"{row[key] / plain[key] - 1:+.0%}"

    def spread(row: dict[str, Any], key: str, digits: int) -> str:
        low, high = row[f"{key}_range"]
        return f"{low:.{digits}f}–{high:.{digits}f}"

    cells = [
        [row["model"], f"{row['arena_mb']:.2f}", f"{plain['arena_mb'] / row['arena_mb']:.2f}×",
         f"{row['max_abs_diff']:.1e}", f"{row['portable_ms']:.0f} ({change(row, 'portable_ms')})",
         spread(row, "portable_ms", 0), f"{row['xnnpack_ms']:.2f} ({change(row, 'xnnpack_ms')})",
         spread(row, "xnnpack_ms", 2)]
        for row in rows
    ]  # fmt: skip
    header = ["model", "planned arena MB", "vs plain", "max |Δ logits|", "portable ms", "rounds",
              "XNNPACK ms", "rounds"]  # fmt: skip
    met = [
        row["model"]
        for row in rows[1:]
        if plain["arena_mb"] / row["arena_mb"] >= 3 and row["portable_ms"] / plain["portable_ms"] <= 1.25
    ]
    verdict = (
        f"`mobilenets summary` analyses the plain peak at {analysed / 1e6:.2f} MB. Goal (arena ≥ 3× below "
        "plain, ≤ 25% latency in the same runtime, the portable kernels whose plan the arena is): "
        + (f"met by {', '.join(met)}." if met else "not met.")
    )
    notes = f"Latency: the median of {args.rounds} rounds (each the median of its calls), their range beside."
    body = table(header, cells, "lrrrrrrr")
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{notes} {verdict}"
    print(text)
    write_fragments(args.markdown, {"deployed-memory": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
