"""`mobilenets bench` at batch 1 (latency) and 32 (throughput), 224×224, 2 threads.

Times the eight variants (torchvision eager/compile/ONNX Runtime fp32/int8; ours eager/optimize/ONNX
Runtime fp32/int8) the way ``mobilenets bench`` does (see ``mobilenets.bench.inference``): each
variant alone in a fresh process, variants taking turns over rounds in balanced orders, with its peak
resident memory from the same processes. Batch 32 runs once more with glibc's default allocator, to
show what page faults cost eager PyTorch. The settings share one folder of prepared files, so the
ONNX exports and int8 calibrations happen once. Writes ``runs/bench/inference/*.json`` and prints
Markdown tables headed by the CPU and the date.

    python benchmarks/inference_latency.py        # ~15 minutes on 2 idle cores
    python benchmarks/inference_latency.py --only batch1 --rounds 1 --repeats 3 --resolution 96  # a check
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.bench.inference import VARIANTS, run_bench
from mobilenets.bench.machine import cpu_description

OUT = Path("runs/bench/inference")
# name: (batch size, glibc's default allocator in the timing processes)
SETTINGS = {"batch1": (1, False), "batch32": (32, False), "batch32_system_malloc": (32, True)}


def _table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| variant | median ms | IQR ms | ms/image | speed-up vs torchvision eager | peak RSS MB "
        "| round medians ms |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for variant, row in report.items():
        if isinstance(row, dict) and "median_ms" in row:
            speedup = row["speedup_vs_torchvision_eager"]
            peak = row["peak_rss_mb"]
            lines.append(
                f"| {variant} | {row['median_ms']:.2f} | {row['iqr_ms']:.2f} | {row['per_image_ms']:.2f} "
                f"| {'n/a' if speedup is None else f'{speedup:.2f}×'} "
                f"| {'—' if peak is None else f'{peak:.0f}'} "
                f"| {' '.join(f'{value:.2f}' for value in row['per_round_median_ms'])} |"
            )
    lines += [f"| {variant} | skipped: {why} | | | | | |" for variant, why in report["skipped"].items()]
    return lines


def _summary(reports: dict[str, dict[str, Any]], seconds: float) -> str:
    """One table for the docs: each variant's batch-1 latency and batch-32 throughput side by side."""
    names = [name for name in VARIANTS if any(name in report for report in reports.values())]

    def cell(setting: str, variant: str, per_image: bool = False) -> str:
        row = reports.get(setting, {}).get(variant)
        if not isinstance(row, dict):
            return "—"
        value = row["per_image_ms"] if per_image else row["median_ms"]
        return f"{value:.2f} ± {row['iqr_ms'] / (32 if per_image else 1):.2f}"

    def ratio(setting: str, variant: str) -> str:
        row = reports.get(setting, {}).get(variant)
        speedup = row.get("speedup_vs_torchvision_eager") if isinstance(row, dict) else None
        return "—" if speedup is None else f"{speedup:.2f}×"

    rows = [
        [
            variant,
            cell("batch1", variant),
            ratio("batch1", variant),
            cell("batch32", variant, per_image=True),
            ratio("batch32", variant),
            cell("batch32_system_malloc", variant, per_image=True),
        ]
        for variant in names
    ]
    header = [
        "variant",
        "batch 1 ms (± IQR)",
        "vs torchvision eager",
        "batch 32 ms/image",
        "vs torchvision eager",
        "batch 32, glibc malloc",
    ]
    noisy = sorted({w.split(":")[0] for report in reports.values() for w in report.get("warnings", [])})
    note = f"\n\nSpread warnings (IQR over 25% of the median): {', '.join(noisy)}." if noisy else ""
    return f"{provenance(seconds)}\n\n{table(header, rows)}{note}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", action="append", choices=tuple(SETTINGS), help="a setting to run (repeatable; default all)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="turns per variant (default 5)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per turn (default 20)")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all eight)")
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    started = time.perf_counter()
    reports: dict[str, dict[str, Any]] = {}

    OUT.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_description()}; {datetime.date.today().isoformat()}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="inference-latency-") as workdir:  # shared prepared files
        for name in args.only or SETTINGS:
            batch, system_malloc = SETTINGS[name]
            result = run_bench(
                "mobilenet_v2",
                batch=batch,
                resolution=args.resolution,
                threads=args.threads,
                rounds=args.rounds,
                repeats=args.repeats,
                only=tuple(args.variants.split(",")),
                system_malloc=system_malloc,
                workdir=workdir,
                progress=lambda line: print(f"  {line}", file=sys.stderr, flush=True),
            )
            report = result.to_dict()
            reports[name] = report
            (OUT / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
            print(
                f"## {name}: batch {batch}, {args.resolution}×{args.resolution}, {args.threads} threads, "
                f"{result.rounds} rounds × {result.repeats} timed calls, each variant alone in a fresh "
                f"process ({report['allocator']})\n"
            )
            print("\n".join(_table(report)))
            if report["warnings"]:
                print("\n" + "\n".join(f"- warning: {warning}" for warning in report["warnings"]))
            print(flush=True)
    write_fragments(args.markdown, {"inference-latency": _summary(reports, time.perf_counter() - started)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
