"""Render a :class:`ModelSummary` as a rich table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import sys

from rich.console import Console
from rich.table import Table

from .summary import ModelSummary

CSV_COLUMNS = (
    "name",
    "kind",
    "output_shape",
    "kernel_size",
    "stride",
    "groups",
    "params",
    "macs",
    "activation_bytes",
    "arithmetic_intensity",
)


class StdoutConsole(Console):
    """rich's console for stdout, whose reader may stop early (``| head``): the end of the pipe raises
    Python's ``BrokenPipeError``, which the CLI ends with status 0, instead of rich's ``SystemExit(1)``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit then writes nowhere
        raise BrokenPipeError


def to_json(summary: ModelSummary) -> str:
    return json.dumps(summary.to_dict(), indent=2)


def to_csv(summary: ModelSummary) -> str:
    """One row per layer, then a ``TOTAL`` row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for layer in summary.layers:
        writer.writerow(
            [
                layer.name,
                layer.kind,
                "x".join(map(str, layer.output_shape)),
                layer.kernel_size,
                layer.stride,
                layer.groups,
                layer.params,
                layer.macs,
                layer.activation_bytes,
                f"{layer.arithmetic_intensity:.3f}",
            ]
        )
    writer.writerow(["TOTAL", "", "", "", "", "", summary.total_params, summary.total_macs, "", ""])
    return buffer.getvalue()


def _schedule(summary: ModelSummary) -> str:
    """Which schedule the peak is of: the plain one, or the chunked and tiled one it was asked for."""
    if summary.memory_efficient is None and summary.patches == 1:
        return "plain schedule"
    chunks = summary.memory_efficient
    parts = (
        []
        if chunks in (None, 1)
        else ["one chunk per channel" if chunks == "channel" else f"{chunks} channel chunks"]
    )
    if summary.patches > 1:
        parts.append(f"{summary.patches}×{summary.patches} patches")
    return "memory-efficient schedule: " + ", ".join(parts)


def _mega(value: float) -> str:
    return f"{value / 1e6:,.2f}M"


def print_table(summary: ModelSummary, console: Console | None = None) -> None:
    """Per-layer table, totals, shares by kind and (if computed) separable-vs-standard ratios."""
    console = console or StdoutConsole(width=None if sys.stdout.isatty() else 160)
    shape = "×".join(map(str, summary.input_shape))
    table = Table(title=f"{summary.model} @ {shape} ({summary.dtype})")
    for column in ("layer", "kind", "output", "params", "mult-adds", "act. bytes", "FLOP/byte"):
        table.add_column(column, justify="left" if column in ("layer", "kind") else "right")
    for layer in summary.layers:
        table.add_row(
            layer.name,
            layer.kind,
            "×".join(map(str, layer.output_shape[1:])),
            f"{layer.params:,}",
            _mega(layer.macs),
            f"{layer.activation_bytes:,}",
            f"{layer.arithmetic_intensity:.1f}",
        )
    table.add_section()
    table.add_row("total", "", "", f"{summary.total_params:,}", _mega(summary.total_macs), "", "")
    console.print(table)

    shares = Table(title="Share by layer kind (v1 paper, Table 2)")
    for column in ("kind", "mult-adds", "parameters"):
        shares.add_column(column, justify="left" if column == "kind" else "right")
    for kind, share in summary.share_by_kind().items():
        shares.add_row(kind, f"{share['macs']:.2%}", f"{share['params']:.2%}")
    console.print(shares)
    console.print(
        f"Peak activation memory ({_schedule(summary)}, {summary.dtype}): "
        f"[bold]{summary.peak_activation_bytes:,} bytes[/bold] at {summary.peak_op}"
    )
    if summary.comparisons:
        # A pair run pointwise first filters the widened channels: its theory is 1/C_in + 1/K²
        pointwise_first = not all(c.depthwise_first for c in summary.comparisons)
        ratios = Table(
            title="Depthwise separable vs standard convolution (mult-adds)",
            caption="C: C_out, or C_in for a pair run pointwise first (*)" if pointwise_first else None,
        )
        theory = "1/C + 1/K²" if pointwise_first else "1/C_out + 1/K²"
        for column in ("depthwise", "C_in→C_out", "K", "separable", "standard", theory, "counted"):
            ratios.add_column(column, justify="left" if column == "depthwise" else "right")
        for c in summary.comparisons:
            ratios.add_row(
                c.depthwise + ("" if c.depthwise_first else " *"),
                f"{c.in_channels}→{c.out_channels}",
                str(c.kernel_size),
                _mega(c.separable_macs),
                _mega(c.standard_macs),
                f"{c.theoretical_ratio:.4f}",
                f"{c.measured_ratio:.4f}",
            )
        console.print(ratios)
