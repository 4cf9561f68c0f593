"""``mobilenets bench``: inference latency of our paths against torchvision and ONNX Runtime."""

from __future__ import annotations

import argparse
import dataclasses
import json

from ..bench.inference import ALL_VARIANTS, EXTRA_VARIANTS, REFERENCE, VARIANTS
from .common import add_allocator_argument, apply_allocator, check_resolution


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="latency/throughput vs torchvision eager/compile and ONNX Runtime fp32/int8"
    )
    parser.add_argument("--model", default="mobilenet_v2", help="model name (default mobilenet_v2)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--resolution", type=int, default=224, help="input size (default 224)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per variant (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first (default 5)")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(ALL_VARIANTS)} "
        f"(default: all but {', '.join(EXTRA_VARIANTS)})",
    )
    parser.add_argument(
        "--peak-rss",
        action="store_true",
        help="also measure each variant's resident memory, alone in a fresh process (slower)",
    )
    add_allocator_argument(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object mapping variant → median_ms"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.inference import run_bench

    allocator = apply_allocator(args)
    only = tuple(name.strip() for name in args.variants.split(",") if name.strip())
    result = run_bench(
        args.model,
        batch=args.batch,
        resolution=check_resolution(args.resolution),
        threads=args.threads,
        repeats=args.repeats,
        warmup=args.warmup,
        only=only,
        allocator=allocator,
    )
    if args.peak_rss:
        from ..bench.rss import peak_rss

        memory = peak_rss(
            result.model,
            tuple(result.results),
            batch=result.batch,
            resolution=result.resolution,
            threads=result.threads,
            system_malloc=args.system_malloc,
        )
        result = dataclasses.replace(result, memory=memory)
    report = result.to_dict()
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{result.model}, batch {result.batch}, {result.resolution}×{result.resolution}, "
        f"{result.threads} threads, median of {report['repeats']} interleaved runs; "
        f"allocator: {result.allocator}; {report['cpu']}"
    )
    memory_header = f" {'peak RSS MB':>12}" if args.peak_rss else ""
    print(
        f"{'variant':<22} {'median ms':>10} {'IQR ms':>8} {'ms/image':>9} {'vs ' + REFERENCE:>24}"
        + memory_header
    )
    for name in ALL_VARIANTS:
        if name in result.results:
            row = report[name]
            speedup = row["speedup_vs_torchvision_eager"]
            ratio = "n/a" if speedup is None else f"{speedup:.2f}× faster"
            times = f"{row['median_ms']:>10.2f} {row['iqr_ms']:>8.2f} {row['per_image_ms']:>9.2f}"
            memory_cell = ""
            if args.peak_rss:
                peak = row.get("peak_rss_mb")
                memory_cell = f" {peak:>12.0f}" if peak is not None else f" {'n/a':>12}"
            print(f"{name:<22} {times} {ratio:>24}{memory_cell}")
        elif name in result.skipped:
            print(f"{name:<22} skipped: {result.skipped[name]}")
    return 0
