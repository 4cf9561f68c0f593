"""``mobilenets list``: the registered models and their size; ``--pretrained``: the weights registry."""

from __future__ import annotations

import argparse
import fnmatch
import json

import torch
from rich.table import Table

from ..analysis.formatting import StdoutConsole
from ..errors import UsageError
from ..models import create_model, list_models
from ..weights.registry import pretrained_for


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("list", help="list the available models, or the packaged pretrained weights")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'mobilenet_v3*'")
    parser.add_argument("--names-only", action="store_true", help="print one name per line")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="the pretrained weights registry: input, size, published and measured accuracy, licence",
    )
    parser.add_argument("--json", action="store_true", help="with --pretrained: one JSON object per entry")
    parser.set_defaults(run=run)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def run_pretrained(args: argparse.Namespace) -> int:
    from ..weights.registry import PRETRAINED

    entries = [
        entry
        for name, entry in PRETRAINED.items()
        if fnmatch.fnmatch(name, args.pattern) or fnmatch.fnmatch(entry.model, args.pattern)
    ]
    if not entries:
        raise UsageError(f"no pretrained weights match {args.pattern!r}; try `mobilenets list --pretrained`")
    if args.names_only:
        print("\n".join(entry.name for entry in entries))
        return 0
    if args.json:
        rows = []
        for entry in entries:
            meta = entry.meta
            meta.pop("categories")
            rows.append({"name": entry.name, "model": entry.model, "resolution": entry.resolution,
                         "resize_size": entry.resize_size, **meta})  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="Pretrained ImageNet weights (packaged, offline)")
    columns = ("weights", "input", "params", "MACs", "MB", "published", "measured", "int8 Δ")
    for column in columns:
        table.add_column(column, justify="left" if column == "weights" else "right", no_wrap=True)
    for entry in entries:
        measured = entry.measured() or {}
        int8 = measured.get("int8_drop_points")
        table.add_row(
            entry.name,
            f"{entry.resolution}/{entry.resize_size}",
            f"{measured['params'] / 1e6:.1f}M" if "params" in measured else "",
            f"{measured['mult_adds'] / 1e6:.0f}M" if "mult_adds" in measured else "",
            f"{entry.file_bytes / 1e6:.1f}",
            f"{entry.published_top1:.1f}%",
            _percent(measured.get("top1")),
            "" if int8 is None else f"{-int8:+.1f}",
        )
    console = StdoutConsole()
    if not console.is_terminal:  # pipes: no 80-column squeeze
        console = StdoutConsole(width=120)
    console.print(table)
    console.print(
        "input: crop/resize. published: top-1 by the weights' authors on the 50,000 ImageNet validation "
        "images; measured: top-1 by this library on the shared ImageNet photos (easier than the full set), "
        "`python benchmarks/pretrained_accuracy.py`; int8 Δ: top-1 change in points with `mobilenets "
        "export --int8` (ONNX Runtime) on 1,000 of them, the other 300 calibrating. `--json` adds "
        "sources, licences and file hashes."
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if args.json and args.names_only:
        raise UsageError("--json and --names-only: choose one (JSON rows, or one name per line)")
    if args.pretrained:
        return run_pretrained(args)
    if args.json:
        raise UsageError("--json goes with --pretrained; for models use --names-only")
    names = list_models(args.pattern)
    if not names:
        raise UsageError(f"no model matches {args.pattern!r}; try `mobilenets list`")
    if args.names_only:
        print("\n".join(names))
        return 0
    table = Table(title="MobileNet-family models")
    for column in ("model", "params", "input", "pretrained"):
        table.add_column(column, justify="left" if column in ("model", "pretrained") else "right")
    for name in names:
        with torch.device("meta"):  # shapes only: no memory, no random initialisation to wait for
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        tags = ", ".join(entry.tag for entry in pretrained_for(name))
        table.add_row(name, f"{params:,}", f"{model.default_resolution}×{model.default_resolution}", tags)
    StdoutConsole().print(table)
    return 0
