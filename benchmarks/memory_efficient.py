"""Memory-efficient inference (MobileNetV2 paper §5.1): peak memory and latency over the chunk count k.

For mobilenet_v2 at 224×224, batch 1, fp32: the analysed peak activation memory of the chunked schedule
(`mobilenets summary mobilenet_v2 --memory-efficient K --format json`), two measurements of one real
forward pass (see ``mobilenets.bench.memory``): the peak of the bytes its tensor allocations hold at
once, as PyTorch's allocator reports them, and the growth of the resident set (each k in a fresh
process), and the batch-1 latency, all variants interleaved in one process, against the plain schedule
run the same way (BatchNorm folded, channels_last, eager). Writes
``runs/bench/memory_efficient/result.json``; ``--markdown`` also writes the table into
``docs/deployment.md`` (between the ``memory-efficient`` or ``memory-efficient-all-blocks`` markers).

    python benchmarks/memory_efficient.py               # ~2 minutes on 2 cores
    python benchmarks/memory_efficient.py --all-blocks  # chunk every block, even the small late ones
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import mobilenets
from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.analysis import summarize
from mobilenets.analysis.memory import schedule_memory
from mobilenets.bench.allocator import reuse_freed_memory
from mobilenets.bench.latency import measure_interleaved
from mobilenets.bench.memory import forward_peak_allocated
from mobilenets.deploy import fuse
from mobilenets.deploy.memory_efficient import memory_efficient

CHUNKS: tuple[int | str, ...] = (1, 2, 3, 4, 8, 16, "channel")
OUT = Path("runs/bench/memory_efficient")
_MEASURE = """
import sys, torch, mobilenets
from mobilenets.bench.memory import forward_rss_growth
from mobilenets.deploy import fuse
from mobilenets.deploy.memory_efficient import memory_efficient
torch.set_num_threads(2)
k, everywhere = sys.argv[1], sys.argv[2] == "all"
model = mobilenets.mobilenet_v2().eval()
model = fuse(model).to(memory_format=torch.channels_last) if k == "plain" else memory_efficient(
    model, k if k == "channel" else int(k), only_where_needed=not everywhere)
x = torch.randn(1, 3, 224, 224)
print(min(forward_rss_growth(model, x) for _ in range(3)))
"""


def measured_growth(chunks: int | str, all_blocks: bool) -> int:
    argv = [sys.executable, "-c", _MEASURE, str(chunks), "all" if all_blocks else "needed"]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1])


def markdown(
    rows: list[dict[str, Any]], plain_peak: int, plain_allocated: int, plain_rss: int, plain_ms: float
) -> str:
    """The table over k, then how the paper's two goals fared (k = 4; the memory-minimising k)."""
    header = ["k", "analysed peak", "× lower", "allocated peak", "× lower", "RSS growth", "× lower",
              "latency ms", "vs plain"]  # fmt: skip
    cells = []
    for row in rows:
        allocated, rss = row["allocated_bytes"], row["measured_bytes"]
        cells.append([
            row["chunks"], f"{row['peak_bytes'] / 1e6:.2f} MB", f"{plain_peak / row['peak_bytes']:.2f}",
            f"{allocated / 1e6:.2f} MB", f"{plain_allocated / allocated:.2f}", f"{rss / 1e6:.1f} MB",
            f"{plain_rss / rss:.2f}", f"{row['median_ms']:.2f}",
            "—" if row["chunks"] == "plain" else f"{100 * (row['median_ms'] / plain_ms - 1):+.0f}%",
        ])  # fmt: skip
    by_k = {row["chunks"]: row for row in rows}
    four = by_k[4]
    four_cost = 100 * (four["median_ms"] / plain_ms - 1)
    four_met = plain_peak / four["peak_bytes"] >= 2 and four_cost <= 15
    best = min(rows[1:], key=lambda row: row["allocated_bytes"])  # the k whose real pass holds least
    best_ratio = plain_peak / best["peak_bytes"]
    four_allocated = plain_allocated / four["allocated_bytes"]
    best_allocated = plain_allocated / best["allocated_bytes"]
    return (
        f"{table(header, cells)}\n\n"
        f"Goal ≥ 2× lower at ≤ 15% latency cost: k = 4 is {plain_peak / four['peak_bytes']:.2f}× lower "
        f"analysed, {four_allocated:.2f}× allocated, at {four_cost:+.0f}% latency: "
        f"{'met' if four_met else 'not met'}. Goal ≥ 3.5× at the memory-minimising k: k = {best['chunks']} "
        f"(least allocated) is {best_ratio:.2f}× lower analysed, {best_allocated:.2f}× allocated: "
        f"{'met' if best_ratio >= 3.5 else 'not met'}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--all-blocks", action="store_true", help="chunk every block (only_where_needed=False)"
    )
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    started = time.perf_counter()
    needed = not args.all_blocks
    torch.manual_seed(0)
    model = mobilenets.mobilenet_v2().eval()
    plain_peak = summarize(model).peak_activation_bytes
    variants: dict[str, Any] = {"plain": fuse(model).to(memory_format=torch.channels_last)}
    variants.update({f"k={k}": memory_efficient(model, k, only_where_needed=needed) for k in CHUNKS})
    x = torch.randn(1, 3, 224, 224)
    reuse_freed_memory()
    timings = measure_interleaved(
        {name: (lambda m=m: m(x)) for name, m in variants.items()}, repeats=30, warmup=3, threads=2, block=5
    )
    plain_ms = timings["plain"].median_ms
    plain_rss = measured_growth("plain", args.all_blocks)
    plain_allocated = forward_peak_allocated(variants["plain"], x)
    rows: list[dict[str, Any]] = [
        {
            "chunks": "plain",
            "peak_bytes": plain_peak,
            "allocated_bytes": plain_allocated,
            "measured_bytes": plain_rss,
            "median_ms": plain_ms,
        }
    ]
    for k in CHUNKS:
        rows.append(
            {
                "chunks": k,
                "peak_bytes": max(op.live_bytes for op in schedule_memory(variants[f"k={k}"], x)),
                "allocated_bytes": forward_peak_allocated(variants[f"k={k}"], x),
                "measured_bytes": measured_growth(k, args.all_blocks),
                "median_ms": timings[f"k={k}"].median_ms,
            }
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"result{'_all_blocks' if args.all_blocks else ''}.json").write_text(
        json.dumps(rows, indent=2) + "\n"
    )
    text = markdown(rows, plain_peak, plain_allocated, plain_rss, plain_ms)
    print(text)
    name = "memory-efficient-all-blocks" if args.all_blocks else "memory-efficient"
    write_fragments(args.markdown, {name: provenance(time.perf_counter() - started) + "\n\n" + text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
