"""``mobilenets summary MODEL``: exact per-layer costs, totals and peak activation memory."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ..analysis.formatting import print_table, to_csv, to_json
from ..analysis.summary import DTYPE_BYTES, summarize
from ..errors import UsageError
from .common import add_model_arguments, model_from_args, model_name_from_args

if TYPE_CHECKING:
    from ..deploy.memory_efficient import Chunks

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
    parser.add_argument(
        "--memory-efficient",
        default=None,
        metavar="K",
        help="peak memory when inverted residuals run in K channel chunks (an integer, or 'channel')",
    )
    parser.add_argument(
        "--patches",
        type=int,
        default=1,
        metavar="N",
        help="with --memory-efficient: also run the stem and first blocks on N×N spatial tiles (MCUNetV2)",
    )
    parser.add_argument(
        "--patch-stride",
        type=int,
        default=4,
        metavar="S",
        help="the tiles cover the blocks whose output stride is at most S (default 4)",
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table")
    parser.add_argument(
        "--json", dest="format", action="store_const", const="json", help="the same as --format json"
    )
    parser.set_defaults(run=run)


def _chunks(value: str | None) -> Chunks | None:
    if value is None:
        return None
    if value == "channel":
        return "channel"
    try:
        chunks = int(value)
    except ValueError:
        chunks = 0
    if chunks < 1:
        raise UsageError(f"--memory-efficient must be a positive integer or 'channel', got {value!r}")
    return chunks


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
    chunks = _chunks(args.memory_efficient)
    if chunks is None:
        if args.patches != 1:
            raise UsageError("--patches needs --memory-efficient K (use 1 for tiles alone)")
        summary = summarize(model, **options)
    else:
        from ..deploy.memory_efficient import summarize_memory_efficient

        patching = {"patches": args.patches, "patch_stride": args.patch_stride}
        summary = summarize_memory_efficient(model, chunks, **patching, **options)
    if args.format == "json":
        print(to_json(summary))
    elif args.format == "csv":
        print(to_csv(summary), end="")
    else:
        print_table(summary)
    return 0
