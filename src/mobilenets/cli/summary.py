"""``mobilenets summary MODEL``: exact per-layer costs, totals and peak activation memory."""

from __future__ import annotations

import argparse
from typing import Any

from ..analysis.formatting import print_table, to_csv, to_json
from ..analysis.summary import DTYPE_BYTES, summarize
from ..errors import UsageError
from .common import (
    add_memory_efficient_arguments,
    add_model_arguments,
    given_flags,
    memory_efficient_options,
    model_from_args,
    model_name_from_args,
)

SMALL_INPUT_RESOLUTION = 32  # CIFAR's size, what --small-input networks are made for


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("summary", help="per-layer parameters, mult-adds and activation memory")
    add_model_arguments(parser)
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help=f"input size (default: the model's; {SMALL_INPUT_RESOLUTION} with --small-input)",
    )
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the analysed input")
    parser.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="float32", help="activation dtype")
    parser.add_argument(
        "--compare-standard",
        action="store_true",
        help="count a standard conv twin for every depthwise separable pair",
    )
    add_memory_efficient_arguments(parser, "peak memory when")
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument("--json", action="store_true", help="the same as --format json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    resolution = args.resolution
    if resolution is None:  # `is None`, not `or`: --resolution 0 is an error to report, not the default
        resolution = SMALL_INPUT_RESOLUTION if args.small_input else model.default_resolution
    options: dict[str, Any] = {
        "resolution": resolution,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "name": model_name_from_args(args),
        "compare_standard": args.compare_standard,
    }
    output = args.format
    if args.json:
        if given_flags(args, "format") and args.format != "json":
            raise UsageError(f"--json and --format {args.format} ask for two formats; give one")
        output = "json"
    lean = memory_efficient_options(args)
    if output == "csv" and (args.compare_standard or lean is not None):
        given = "--compare-standard" if args.compare_standard else "--memory-efficient/--patches"
        raise UsageError(f"{given}: the per-layer CSV has no place for it; use --format json or table")
    if lean is None:
        summary = summarize(model, **options)
    else:
        from ..deploy.memory_efficient import summarize_memory_efficient

        chunks, patches, stride = lean
        summary = summarize_memory_efficient(model, chunks, patches=patches, patch_stride=stride, **options)
    if output == "json":
        print(to_json(summary))
    elif output == "csv":
        print(to_csv(summary), end="")
    else:
        print_table(summary)
    return 0
