"""``mobilenets bench``: inference latency of our paths against torchvision and ONNX Runtime.

Each variant is timed alone in a fresh process, variants taking turns over rounds (see
:mod:`mobilenets.bench.inference`); a table (or ``--json``) of medians, spreads and peak memory goes to
stdout, progress and warnings about noisy timings to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..bench.inference import ALL_VARIANTS, EXTRA_VARIANTS, REFERENCE, REPEATS, ROUNDS, VARIANTS, WARMUP
from .common import add_allocator_argument, apply_allocator, check_resolution


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench", help="latency/throughput vs torchvision eager/compile and ONNX Runtime fp32/int8"
    )
    parser.add_argument("--model", default="mobilenet_v2", help="model name (default mobilenet_v2)")
    parser.add_argument(
        "--batch-size", "--batch", dest="batch_size", type=int, default=1, help="batch size (default 1)"
    )
    parser.add_argument(
        "--resolution", type=int, default=None, help="input size (default: the model's own, 224 for most)"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=ROUNDS,
        help=f"turns each variant gets, each in a fresh process (default {ROUNDS})",
    )
    parser.add_argument(
        "--repeats", type=int, default=REPEATS, help=f"timed calls per process (default {REPEATS})"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=WARMUP,
        help=f"untimed calls per process first, where compiling variants compile (default {WARMUP})",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(ALL_VARIANTS)} "
        f"(default: all but {', '.join(EXTRA_VARIANTS)})",
    )
    parser.add_argument(
        "--peak-rss",
        action="store_true",
        help="accepted for older scripts: every timing process now measures its peak resident memory",
    )
    add_allocator_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.set_defaults(run=run)


def _progress(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def _resolution(args: argparse.Namespace) -> int:
    """``--resolution``, else the model's default input size (EfficientNet-Lite1..4 differ from 224)."""
    if args.resolution is not None:
        return check_resolution(args.resolution)
    from ..models import create_model

    return create_model(args.model).default_resolution


def run(args: argparse.Namespace) -> int:
    from ..bench.inference import run_bench

    apply_allocator(args)  # for the preparing step here; each timing process applies it itself
    result = run_bench(
        args.model,
        batch=args.batch_size,
        resolution=_resolution(args),
        threads=args.threads,
        rounds=args.rounds,
        repeats=args.repeats,
        warmup=args.warmup,
        only=tuple(name.strip() for name in args.variants.split(",") if name.strip()),
        system_malloc=args.system_malloc,
        progress=_progress,
    )
    report = result.to_dict()
    for warning in report["warnings"]:
        print(f"mobilenets bench: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{result.model}, batch {result.batch}, {result.resolution}×{result.resolution}, "
        f"{result.threads} threads; each variant alone in a fresh process, {result.rounds} rounds × "
        f"{result.repeats} timed calls after {result.warmup} warm-up, order rotated every round; "
        f"allocator: {result.allocator}; {report['cpu']}"
    )
    print(
        f"{'variant':<22} {'median ms':>10} {'IQR ms':>8} {'ms/image':>9} {'vs ' + REFERENCE:>24} "
        f"{'peak RSS MB':>12}  round medians ms"
    )
    for name in ALL_VARIANTS:
        if name in result.reports:
            row = report[name]
            speedup = row["speedup_vs_torchvision_eager"]
            ratio = "n/a" if speedup is None else f"{speedup:.2f}× faster"
            times = f"{row['median_ms']:>10.2f} {row['iqr_ms']:>8.2f} {row['per_image_ms']:>9.2f}"
            peak = row["peak_rss_mb"]
            memory = f"{peak:>12.0f}" if peak is not None else f"{'n/a':>12}"
            rounds = " ".join(f"{value:.2f}" for value in row["per_round_median_ms"])
            print(f"{name:<22} {times} {ratio:>24} {memory}  {rounds}")
        elif name in result.skipped:
            print(f"{name:<22} skipped: {result.skipped[name]}")
    return 0
