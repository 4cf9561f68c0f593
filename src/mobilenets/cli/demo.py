"""``mobilenets demo``: the report that measures what depthwise separable convolutions buy."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import path_argument, thread_count


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "demo", help="measure standard vs depthwise separable convs, train on digits; write a report"
    )
    parser.add_argument("--out", type=path_argument, default=Path("runs/demo"), help="report folder")
    parser.add_argument(
        "--threads", type=thread_count, default=2, help="CPU threads for timing and training (default 2)"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per variant (median reported)")
    parser.add_argument(
        "--no-train",
        action="store_true",
        help="skip training the v1/v2 networks on digits (about 2 minutes); the accuracy column stays empty",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    report = run_demo(args.out, threads=args.threads, repeats=args.repeats, train=not args.no_train)
    print(f"report written to {report}")
    return 0
