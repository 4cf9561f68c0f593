"""``mobilenets list``: the registered models with their size at the default width."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ..errors import UsageError
from ..models import create_model, list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("list", help="list the available models")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet_v3*'")
    parser.add_argument("--names-only", action="store_true", help="print one name per line")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = list_models(args.pattern)
    if not names:
        raise UsageError(f"no model matches {args.pattern!r}; try `mobilenets list`")
    if args.names_only:
        print("\n".join(names))
        return 0
    table = Table(title="MobileNet-family models")
    for column in ("model", "params", "input"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in names:
        model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        table.add_row(name, f"{params:,}", f"{model.default_resolution}×{model.default_resolution}")
    Console().print(table)
    return 0
