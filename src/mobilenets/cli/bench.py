"""``mobilenets bench``: inference latency of our paths against torchvision and ONNX Runtime.

Each variant is timed alone in a fresh process, variants taking turns over rounds (see
:mod:`mobilenets.bench.inference`); a table (or ``--json``) of medians, spreads and peak memory goes to
stdout, progress and warnings about noisy timings to stderr. ``--pair A,B`` instead compares two
variants turn by turn, both loaded at once (:mod:`mobilenets.bench.paired`): the ratio of their times
with a 95% interval, far narrower on a noisy machine than rounds can give.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from ..bench.inference import ALL_VARIANTS, EXTRA_VARIANTS, REFERENCE, REPEATS, ROUNDS, VARIANTS, WARMUP
from ..bench.paired import TURNS as PAIR_TURNS
from ..bench.paired import WARMUP as PAIR_WARMUP
from ..errors import UsageError
from .common import add_allocator_argument, apply_allocator, check_resolution, given_flags, thread_count
from .export import DEFAULT_CALIB_IMAGES as CALIB_IMAGES


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
    parser.add_argument(
        "--threads", type=thread_count, default=2, help="threads for every runtime (default 2)"
    )
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
        default=None,
        help=f"untimed calls per process first, where compiling variants compile (default {WARMUP}; "
        f"{PAIR_WARMUP} for --pair, as runtimes' spinning thread pools settle)",
    )
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated subset of {', '.join(ALL_VARIANTS)} "
        f"(default: all but {', '.join(EXTRA_VARIANTS)})",
    )
    parser.add_argument(
        "--pair",
        action="append",
        metavar="A,B",
        help="compare variant A against B turn by turn instead (repeatable): A's time as a multiple of "
        "B's, with its 95%% interval (--variants and --rounds are refused with it)",
    )
    parser.add_argument(
        "--turns",
        type=int,
        default=PAIR_TURNS,
        help=f"turns of each side of a --pair, --repeats timed calls each (default {PAIR_TURNS})",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="time the model's packaged ImageNet weights instead of a seeded initialisation (int8 "
        "files calibrated on --calib, else on random inputs)",
    )
    parser.add_argument(
        "--calib", default=None, help="with --pretrained: images to calibrate the int8 variants on"
    )
    parser.add_argument(
        "--calib-images", type=int, default=None, help="how many --calib images (default 300)"
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


def _weights(args: argparse.Namespace) -> dict[str, Any]:
    """``run_bench``'s and ``run_pairs``' ``pretrained`` and ``calibration`` from the flags."""
    if args.calib is not None and not args.pretrained:
        raise UsageError("--calib: only with --pretrained (random weights are calibrated on random inputs)")
    if args.calib_images is not None and args.calib is None:
        raise UsageError("--calib-images: only with --calib")
    count = CALIB_IMAGES if args.calib_images is None else args.calib_images
    if count < 1:
        raise UsageError(f"--calib-images must be >= 1, got {count}")
    calibration = None
    if args.calib is not None:
        from ..bench.prepare import bench_calibration

        calibration = bench_calibration(args.model, _resolution(args), args.calib, count)
    return {"pretrained": bool(args.pretrained), "calibration": calibration}


def _pairs(values: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        names = [name.strip() for name in value.split(",")]
        if len(names) != 2 or not all(names):
            raise UsageError(f"--pair takes two variants as A,B; got {value!r}")
        pairs.append((names[0], names[1]))
    return pairs


def _run_pairs(args: argparse.Namespace) -> int:
    from ..bench.paired import run_pairs

    results = run_pairs(
        args.model,
        _pairs(args.pair),
        batch=args.batch_size,
        resolution=_resolution(args),
        threads=args.threads,
        turns=args.turns,
        repeats=args.repeats,
        warmup=PAIR_WARMUP if args.warmup is None else args.warmup,
        system_malloc=args.system_malloc,
        progress=_progress,
        **_weights(args),
    )
    if args.json:
        print(json.dumps({"model": args.model, "pairs": [result.to_dict() for result in results]}))
        return 0
    weights = ", packaged weights" if args.pretrained else ""
    print(
        f"{args.model}{weights}, batch {args.batch_size}, {args.threads} threads; each pair loaded in two "
        f"fresh processes taking {args.turns} turns of {args.repeats} timed calls each, one at a time"
    )
    print(f"{'A':<26} {'B':<26} {'A ms':>7} {'B ms':>7} {'A / B':>7}  95% interval")
    for result in results:
        row = result.to_dict()
        low, high = row["interval"]
        print(
            f"{result.first:<26} {result.second:<26} {row['first_median_ms']:>7.2f} "
            f"{row['second_median_ms']:>7.2f} {row['ratio']:>6.3f}×  {low:.3f}–{high:.3f}×"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    apply_allocator(args)  # for the preparing step here; each timing process applies it itself
    stray = given_flags(args, "variants", "rounds") if args.pair else given_flags(args, "turns")
    if stray:
        applies = "to rounds of fresh processes, not to --pair" if args.pair else "only with --pair"
        raise UsageError(f"{', '.join(stray)}: {applies}")
    with _memory_refused(args):
        return _run_pairs(args) if args.pair else _run_rounds(args)


@contextlib.contextmanager
def _memory_refused(args: argparse.Namespace) -> Iterator[None]:
    """PyTorch's allocation failure (a batch too large for this machine) as a usage error."""
    try:
        yield
    except RuntimeError as error:
        if "can't allocate memory" not in str(error) and "not enough memory" not in str(error):
            raise
        raise UsageError(
            f"batch {args.batch_size} at {_resolution(args)}×{_resolution(args)} does not fit in this "
            f"machine's memory ({str(error).splitlines()[0]}); lower --batch-size"
        ) from None


def _run_rounds(args: argparse.Namespace) -> int:
    from ..bench.inference import run_bench

    result = run_bench(
        args.model,
        batch=args.batch_size,
        resolution=_resolution(args),
        threads=args.threads,
        rounds=args.rounds,
        repeats=args.repeats,
        warmup=WARMUP if args.warmup is None else args.warmup,
        only=tuple(name.strip() for name in args.variants.split(",") if name.strip()),
        system_malloc=args.system_malloc,
        progress=_progress,
        **_weights(args),
    )
    if not result.reports:  # every variant asked for was skipped: an empty table is not a result
        reasons = "; ".join(f"{name}: {why}" for name, why in result.skipped.items())
        raise UsageError(f"no variant could be timed ({reasons})")
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
        f"{'variant':<22} {'median ms':>10} {'IQR ms':>8} {'ms/image':>9} {'speed vs ' + REFERENCE:>24} "
        f"{'peak RSS MB':>12}  round medians ms"
    )
    for name in ALL_VARIANTS:
        if name in result.reports:
            row = report[name]
            speedup = row["speedup_vs_torchvision_eager"]
            ratio = "n/a" if speedup is None else f"{speedup:.2f}×"  # above 1: faster, below: slower
            times = f"{row['median_ms']:>10.2f} {row['iqr_ms']:>8.2f} {row['per_image_ms']:>9.2f}"
            peak = row["peak_rss_mb"]
            memory = f"{peak:>12.0f}" if peak is not None else f"{'n/a':>12}"
            rounds = " ".join(f"{value:.2f}" for value in row["per_round_median_ms"])
            print(f"{name:<22} {times} {ratio:>24} {memory}  {rounds}")
        elif name in result.skipped:
            print(f"{name:<22} skipped: {result.skipped[name]}")
    return 0
