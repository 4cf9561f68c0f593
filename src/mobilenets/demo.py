"""The main job: measure the central claim of MobileNets on this machine and write a report.

Part 1 puts one standard 3×3 conv beside its depthwise separable version at several widths; part 2
compares whole networks (Conv MobileNet v1, MobileNet v1, MobileNet v2). For each we report parameters,
mult-adds, peak activation memory and measured CPU latency (median, interleaved, channels_last, fixed
threads), and the theoretical ratio ``1/C_out + 1/K²`` beside every measured one.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .analysis.layers import layer_costs
from .analysis.memory import peak_activation_bytes
from .bench.latency import measure_interleaved, prepare_for_inference
from .models import create_model

LAYER_WIDTHS = (32, 64, 128, 256, 512)
LAYER_SPATIAL = 28
DEMO_MODELS = ("conv_mobilenet_v1", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large")


@dataclass(frozen=True)
class Row:
    """One measured variant: its costs and median latency."""

    name: str
    params: int
    macs: int
    peak_bytes: int
    latency_ms: float


def _standard(channels: int) -> nn.Module:
    return nn.Conv2d(channels, channels, 3, padding=1, bias=False)


def _separable(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.Conv2d(channels, channels, 1, bias=False),
    )


def _measure(
    modules: dict[str, nn.Module], resolution: int, channels: int, threads: int, repeats: int
) -> list[Row]:
    example = torch.randn(1, channels, resolution, resolution).contiguous(memory_format=torch.channels_last)
    prepared = {name: prepare_for_inference(module) for name, module in modules.items()}
    timings = measure_interleaved(
        {name: functools.partial(module, example) for name, module in prepared.items()},
        repeats=repeats,
        threads=threads,
    )
    rows = []
    for name, module in prepared.items():
        params = sum(p.numel() for p in module.parameters())
        macs = sum(layer.macs for layer in layer_costs(module, example))
        peak = peak_activation_bytes(module, example)
        rows.append(Row(name, params, macs, peak, timings[name].median_ms))
    return rows


def _layer_table(results: dict[int, tuple[Row, Row]]) -> str:
    lines = [
        "| C_in = C_out | standard mult-adds | separable mult-adds | 1/C_out + 1/K² | mult-add ratio "
        "| param ratio | standard ms | separable ms | latency ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for channels, (std, sep) in results.items():
        theory = 1 / channels + 1 / 9
        lines.append(
            f"| {channels} | {std.macs / 1e6:.2f}M | {sep.macs / 1e6:.2f}M | {theory:.4f} | "
            f"{sep.macs / std.macs:.4f} | {sep.params / std.params:.4f} | {std.latency_ms:.3f} | "
            f"{sep.latency_ms:.3f} | {sep.latency_ms / std.latency_ms:.3f} |"
        )
    return "\n".join(lines)


def _model_table(rows: list[Row]) -> str:
    base = rows[0]
    lines = [
        "| model | params | mult-adds | peak activations (fp32) | latency ms | "
        f"mult-adds vs {base.name} | latency vs {base.name} |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.params:,} | {row.macs / 1e6:,.1f}M | {row.peak_bytes / 1e6:.2f} MB | "
            f"{row.latency_ms:.2f} | {row.macs / base.macs:.3f} | {row.latency_ms / base.latency_ms:.3f} |"
        )
    return "\n".join(lines)


def _charts(out: Path, layers: dict[int, tuple[Row, Row]], models: list[Row]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    widths = list(layers)
    positions = range(len(widths))
    theory = [1 / c + 1 / 9 for c in widths]
    mac_ratio = [sep.macs / std.macs for std, sep in layers.values()]
    latency_ratio = [sep.latency_ms / std.latency_ms for std, sep in layers.values()]
    ax.bar([p - 0.27 for p in positions], theory, 0.27, label="theory 1/C + 1/K²")
    ax.bar(list(positions), mac_ratio, 0.27, label="mult-adds (counted)")
    ax.bar([p + 0.27 for p in positions], latency_ratio, 0.27, label="latency (measured)")
    ax.set_xticks(list(positions), [str(c) for c in widths])
    ax.set_xlabel(f"channels (3×3 conv, {LAYER_SPATIAL}×{LAYER_SPATIAL}, batch 1)")
    ax.set_ylabel("depthwise separable / standard")
    ax.set_title("Cost of a depthwise separable conv relative to a standard conv")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "layer_ratios.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    names = [row.name for row in models]
    for ax, values, label in zip(
        axes,
        ([r.params / 1e6 for r in models], [r.macs / 1e6 for r in models], [r.latency_ms for r in models]),
        ("parameters (M)", "mult-adds (M)", "latency (ms, batch 1)"),
        strict=True,
    ):
        ax.bar(range(len(names)), values, color=["#c44", "#48c", "#4a4", "#a6c"][: len(names)])
        ax.set_xticks(range(len(names)), names, rotation=25, ha="right", fontsize=8)
        ax.set_title(label)
        ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out / "models.png", dpi=120)
    plt.close(fig)
    return ["layer_ratios.png", "models.png"]


def run_demo(out: Path, *, threads: int = 2, repeats: int = 20) -> Path:
    """Measure both comparisons and write ``out/report.md`` with its charts; returns the report path."""
    if threads < 1 or repeats < 1:
        raise ValueError(f"threads and repeats must be positive, got {threads} and {repeats}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    print(f"[1/3] standard vs depthwise separable 3×3 conv at {LAYER_SPATIAL}×{LAYER_SPATIAL}")
    layers: dict[int, tuple[Row, Row]] = {}
    for channels in LAYER_WIDTHS:
        std, sep = _measure(
            {"standard": _standard(channels), "separable": _separable(channels)},
            LAYER_SPATIAL,
            channels,
            threads,
            repeats,
        )
        layers[channels] = (std, sep)
    print(f"[2/3] whole networks at 224×224: {', '.join(DEMO_MODELS)}")
    models = _measure({name: create_model(name) for name in DEMO_MODELS}, 224, 3, threads, repeats)
    print("[3/3] writing the report")
    charts = _charts(out, layers, models)
    report = out / "report.md"
    report.write_text(
        "\n".join(
            [
                "# Depthwise separable convolutions, measured",
                "",
                f"Machine: {platform.machine()}, torch {torch.__version__}, {threads} threads, "
                f"channels_last, fp32, median of {repeats} interleaved runs after warm-up.",
                "",
                "## One layer: standard 3×3 conv vs depthwise 3×3 + pointwise 1×1",
                "",
                _layer_table(layers),
                "",
                "![layer ratios](layer_ratios.png)",
                "",
                "## Whole networks (224×224, batch 1, 1000 classes)",
                "",
                _model_table(models),
                "",
                "![models](models.png)",
                "",
                "Mult-adds and parameters are exact counts (`mobilenets summary MODEL`); peak activations "
                "follow the plain sequential schedule of the MobileNetV2 paper (§5.1). Latency is this "
                "machine's, and ratios matter more than absolute times.",
                "",
            ]
        )
    )
    print(f"charts: {', '.join(str(out / chart) for chart in charts)}")
    return report
