"""The main job: measure the central claim of MobileNets on this machine and write a report.

Part 1 puts one standard 3×3 conv beside its depthwise separable version at several widths; part 2
compares whole networks (Conv MobileNet v1, MobileNet v1, MobileNet v2). For each we report parameters,
mult-adds, peak activation memory and measured CPU latency (median, interleaved, channels_last, fixed
threads), and the theoretical ratio ``1/C_out + 1/K²`` beside every measured one. Part 3 measures the
accuracy side of the trade (the paper's "small drop in accuracy for 8–9× less compute"): the
``separable`` ablation (``mobilenets ablate``) trains MobileNet v1 and its standard-conv twin on the
built-in digits over several seeds, so the difference comes with its noise; MobileNet v2 is trained
once for the deployment part.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.layers import layer_costs
from ..analysis.memory import peak_activation_bytes
from ..atomic import unwritable_reason
from ..bench.latency import measure_interleaved, prepare_for_inference
from ..bench.machine import cpu_description
from ..errors import UsageError
from ..models import create_model

LAYER_WIDTHS = (32, 64, 128, 256, 512)
LAYER_SPATIAL = 28
DEMO_MODELS = ("conv_mobilenet_v1", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large")
DEPLOY_MODEL = "mobilenet_v2"  # the trained model the demo exports
ABLATION_SEEDS = 3  # per arm: enough for a spread and an interval, in about two minutes
# The separable claim's arms and the demo's names for them.
ARM_MODELS = {"separable": "mobilenet_v1", "standard": "conv_mobilenet_v1"}


@dataclass(frozen=True)
class DigitsRecipe:
    """One fixed recipe for every model, small enough for ~2 minutes on 2 cores for all three.

    Width 0.5 at 32×32 keeps Conv MobileNet v1 (the costliest) fast. lr 0.02 at batch 32 because
    MobileNet v2 lags at higher rates in so few epochs (measured: 31% at lr 0.1 / batch 64, 52% at
    lr 0.05 / batch 32, 92–96% here, moving with the thread count; the v1 networks 94–99%).
    """

    width_mult: float = 0.5
    img_size: int = 32
    epochs: int = 6
    batch_size: int = 32
    lr: float = 0.02
    seed: int = 0


DIGITS_RECIPE = DigitsRecipe()


@dataclass(frozen=True)
class Trained:
    """The outcome of one digits run: final-epoch val top-1 (fraction) and how long it took."""

    top1: float
    seconds: float
    std: float | None = None  # over seeds, when several were trained
    seeds: int = 1


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


def _model_table(rows: list[Row], trained: dict[str, Trained]) -> str:
    base = rows[0]
    lines = [
        "| model | params | mult-adds | peak activations (fp32) | latency ms | "
        f"mult-adds vs {base.name} | latency vs {base.name} | digits val top-1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        result = trained.get(row.name)
        top1 = "—"
        if result is not None:
            top1 = f"{100 * result.top1:.1f}%"
            if result.std is not None:
                top1 = f"{100 * result.top1:.1f} ± {100 * result.std:.1f}% ({result.seeds} seeds)"
        lines.append(
            f"| {row.name} | {row.params:,} | {row.macs / 1e6:,.1f}M | {row.peak_bytes / 1e6:.2f} MB | "
            f"{row.latency_ms:.2f} | {row.macs / base.macs:.3f} | {row.latency_ms / base.latency_ms:.3f} | "
            f"{top1} |"
        )
    return "\n".join(lines)


_DEMO_ABLATION_FILES = {"separable", "standard", "ablation.json", "ablation.md", "ablation.png"}


def _check_demo_ablation(out: Path, recipe: DigitsRecipe) -> None:
    """Refuse to delete ``out`` unless it holds only what the demo's ablation writes (an ablation a user
    ran into the same folder, hours of training, would go)."""
    names = {entry.name for entry in out.iterdir()} if out.is_dir() else {"(a file)"}
    report = out / "ablation.json"
    try:
        previous = json.loads(report.read_text()) if report.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        previous = {}
    demo = {"data": "digits", "epochs": recipe.epochs, "width_mult": recipe.width_mult}
    ours = previous is None or (
        isinstance(previous, dict)
        and previous.get("claim") == "separable"
        and isinstance(previous.get("recipe"), dict)
        and all(previous["recipe"].get(key) == value for key, value in demo.items())
    )
    if not names <= _DEMO_ABLATION_FILES or not ours:
        raise UsageError(
            f"{out} holds something the demo did not write (the demo replaces its own ablation there); "
            "move it, or give the demo another --out"
        )


def separable_ablation(
    out: Path, *, recipe: DigitsRecipe = DIGITS_RECIPE, threads: int = 2
) -> dict[str, Any]:
    """``mobilenets ablate separable`` on digits with the demo's recipe, ``ABLATION_SEEDS`` seeds per arm.

    A previous demo ablation in ``out`` is replaced; anything else there is refused, not deleted.
    Returns the ablation's JSON report (see ``ablation.md`` there).
    """
    from ..ablation import get_claim, run_ablation, write_report

    if out.exists():
        _check_demo_ablation(out, recipe)
        shutil.rmtree(out)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        report = run_ablation(
            get_claim("separable"),
            data="digits",
            epochs=recipe.epochs,
            seeds=ABLATION_SEEDS,
            out=out,
            train_options={
                "width_mult": recipe.width_mult,
                "img_size": recipe.img_size,
                "batch_size": recipe.batch_size,
                "lr": recipe.lr,
                "warmup_epochs": 0.0,
                "workers": 0,
            },
            log=lambda line: print(f"  {line}", flush=True),
        )
    finally:
        torch.set_num_threads(previous_threads)
    return write_report(report, out)


def _ablation_trained(report: dict[str, Any]) -> dict[str, Trained]:
    """The ablation's arms as the demo's model rows (fractions, like single runs)."""
    return {
        ARM_MODELS[name]: Trained(
            arm["top1_mean"] / 100,
            arm["train_seconds"],
            None if arm["top1_std"] is None else arm["top1_std"] / 100,
            len(arm["metric_values"]),
        )
        for name, arm in report["arms"].items()
    }


def _ablation_note(report: dict[str, Any] | None) -> str:
    if report is None:
        return ""
    ((name, diff),) = report["differences"].items()
    interval = (
        "" if diff["ci95"] is None else f", 95% interval [{diff['ci95'][0]:+.1f}, {diff['ci95'][1]:+.1f}]"
    )
    return (
        f"The accuracy side: {name} = {diff['mean']:+.1f} points of digits val top-1{interval}: "
        f"{diff['verdict']} at this budget ({len(report['seeds'])} seeds per arm, mean ± standard "
        f"deviation in the table; the paper expects {report['expectation']}). Digits are far too small "
        "to settle the claim: see docs/ablation.md for the CIFAR-10 measurement and "
        "`mobilenets ablate` to run it. Report, plot and runs: `ablate/`."
    )


def train_on_digits(
    out: Path,
    models: tuple[str, ...] = (DEPLOY_MODEL,),
    *,
    recipe: DigitsRecipe = DIGITS_RECIPE,
    threads: int = 2,
) -> dict[str, Trained]:
    """Train each model on the built-in digits into ``out/MODEL`` with ``recipe``; same seed for all.

    A previous demo run in ``out/MODEL`` is replaced, so the demo can be re-run. Reports the
    final-epoch val top-1, not the best, so no epoch is picked on the val set.
    """
    from ..training import TrainConfig, train

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    results: dict[str, Trained] = {}
    try:
        for name in models:
            run_dir = out / name
            if run_dir.exists():
                shutil.rmtree(run_dir)
            config = TrainConfig(
                model=name,
                width_mult=recipe.width_mult,
                img_size=recipe.img_size,
                epochs=recipe.epochs,
                batch_size=recipe.batch_size,
                lr=recipe.lr,
                warmup_epochs=0.0,  # the recipe's own schedule: no warm-up in 6 epochs
                seed=recipe.seed,
                data="digits",
                workers=0,
                progress=False,
                out=str(run_dir),
            )
            started = time.perf_counter()
            result = train(config)
            results[name] = Trained(float(result["final_top1"]), time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous_threads)
    return results


def _training_note(trained: dict[str, Trained], recipe: DigitsRecipe) -> str:
    if not trained:
        return "Digits val top-1: not measured in this run (`--no-train`)."
    times = ", ".join(f"{name} {result.seconds:.0f} s" for name, result in trained.items())
    return (
        f"Digits val top-1: trained from scratch on scikit-learn's 8×8 digits (upscaled to "
        f"{recipe.img_size}×{recipe.img_size}, 10 classes, 10% held out: 179 images, so one image is "
        f"0.56%) at width {recipe.width_mult}, {recipe.epochs} epochs, batch {recipe.batch_size}, SGD "
        f"lr {recipe.lr} cosine; the final epoch's accuracy, over {ABLATION_SEEDS} seeds for the two v1 "
        f"networks and seed {recipe.seed} for {DEPLOY_MODEL}. The other columns are the full-size "
        f"224×224 networks. Training time: {times}."
    )


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


DEPLOY_PACKAGES = ("onnx", "onnxruntime")  # the deploy extra's, for the ONNX step


def _deployment(out: Path, *, steps: int, threads: int, repeats: int) -> str:
    """Step 4: the trained model exported to ONNX fp32 and int8 and measured; the report's section.

    Without the deploy extra (a plain ``pip install mobilenets``) the step is skipped and says so,
    rather than failing after the minutes of measuring and training before it.
    """
    missing = [name for name in DEPLOY_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        why = f"{' and '.join(missing)} not installed: pip install 'mobilenets[deploy]'"
        print(f"[4/{steps}] deploying the trained {DEPLOY_MODEL}: skipped ({why})")
        return f"## Deployment\n\nSkipped: {why}, then run `mobilenets demo` again.\n"
    from .deploy_report import deploy_report, deploy_table

    print(f"[4/{steps}] deploying the trained {DEPLOY_MODEL}: fused, ONNX fp32 and int8, each measured")
    checkpoint = out / "digits" / DEPLOY_MODEL / "last.safetensors"
    rows = deploy_report(checkpoint, out / "deploy", threads=threads, repeats=repeats)
    return "\n".join(
        [
            f"## Deployment: the trained {DEPLOY_MODEL} (digits, {DIGITS_RECIPE.img_size}×"
            f"{DIGITS_RECIPE.img_size})",
            "",
            deploy_table(rows),
            "",
            "The ONNX files were checked against PyTorch in ONNX Runtime (max |Δ logits| ≤ 1e-4) on the "
            "validation images before being measured; int8 is calibrated on 200 training images. At this "
            "size per-call overhead dominates latency.",
            "",
        ]
    )


def run_demo(out: Path, *, threads: int = 2, repeats: int = 20, train: bool = True) -> Path:
    """Measure both comparisons, train on digits unless ``train`` is False, and write ``out/report.md``.

    Returns the report path; the charts and the digits runs are written beside it.
    """
    if threads < 1 or repeats < 1:
        raise UsageError(f"threads and repeats must be positive, got {threads} and {repeats}")
    unwritable = unwritable_reason(out, folder=True)
    if unwritable is not None:
        raise UsageError(f"--out {str(out)!r}: {unwritable}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    steps = 5 if train else 4
    print(f"[1/{steps}] standard vs depthwise separable 3×3 conv at {LAYER_SPATIAL}×{LAYER_SPATIAL}")
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
    print(f"[2/{steps}] whole networks at 224×224: {', '.join(DEMO_MODELS)}")
    models = _measure({name: create_model(name) for name in DEMO_MODELS}, 224, 3, threads, repeats)
    trained: dict[str, Trained] = {}
    ablation: dict[str, Any] | None = None
    if train:
        print(
            f"[3/{steps}] the accuracy side: `ablate separable` on digits ({DIGITS_RECIPE.epochs} epochs, "
            f"{ABLATION_SEEDS} seeds per arm), then {DEPLOY_MODEL} for deployment"
        )
        ablation = separable_ablation(out / "ablate", threads=threads)
        trained = {**_ablation_trained(ablation), **train_on_digits(out / "digits", threads=threads)}
    else:
        print(f"[3/{steps}] training on digits: skipped (--no-train)")
    deployment = _deployment(out, steps=steps, threads=threads, repeats=repeats) if train else ""
    print(f"[{steps}/{steps}] writing the report")
    charts = _charts(out, layers, models)
    report = out / "report.md"
    report.write_text(
        "\n".join(
            [
                "# Depthwise separable convolutions, measured",
                "",
                f"Machine: {cpu_description()}, torch {torch.__version__}, {threads} threads, "
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
                _model_table(models, trained),
                "",
                "![models](models.png)",
                "",
                "Mult-adds and parameters are exact counts (`mobilenets summary MODEL`); peak activations "
                "follow the plain sequential schedule of the MobileNetV2 paper (§5.1). Latency is this "
                "machine's, and ratios matter more than absolute times.",
                "",
                _training_note(trained, DIGITS_RECIPE),
                "",
                _ablation_note(ablation),
                "",
                deployment,
            ]
        )
    )
    print(f"charts: {', '.join(str(out / chart) for chart in charts)}")
    return report
