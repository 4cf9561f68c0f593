"""An ablation's outputs: a JSON file, a Markdown report and a PNG, written into its directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..atomic import save_atomic
from ..evaluation.plots import new_figure, save_png
from .run import AblationReport

_VERDICTS = {
    "no significant difference": "no significant difference at this budget",
    "too few seeds for an interval": "too few seeds to say (give --seeds 2 or more)",
    "no spread in either arm for an interval": "cannot say: every seed of both arms scored the same (a "
    "recipe that does not learn, or too few test images to tell seeds apart)",
}


def _cell(mean: float, std: float | None) -> str:
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


_SHOWN_ABOVE = ("model", "data", "epochs", "width_mult", "img_size", "batch_size", "workers")


def _training(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe's other settings (optimizer, lr, weight decay, ...): what reproduces the runs."""
    return {key: value for key, value in recipe.items() if key not in _SHOWN_ABOVE}


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the claim, the recipe, a row per arm, each difference with its interval."""
    recipe = report["recipe"]
    lines = [
        f"# Ablation: {report['claim']}",
        "",
        f"Claim ({report['source']}): {report['statement']}.",
        "",
        f"{report['model']} on {recipe['data']}, {recipe['epochs']} epochs, width {recipe['width_mult']}, "
        f"{recipe['img_size']} px, batch {recipe['batch_size']}, seeds {report['seeds']}; the same recipe "
        "for every arm.",
        "",
        "Recipe: " + ", ".join(f"{key} {value}" for key, value in _training(recipe).items()) + ".",
        "",
    ]
    int8 = report["metric"] != "top-1 (%)"
    extra = " fp32 top-1 (%) |" if int8 else ""
    lines += [
        f"| arm | {report['metric']} |{extra} params | mult-adds | latency (ms, batch 1) |",
        "| --- | ---: |" + (" ---: |" if int8 else "") + " ---: | ---: | ---: |",
    ]
    for name, arm in report["arms"].items():
        top1 = f" {_cell(arm['top1_mean'], arm['top1_std'])} |" if int8 else ""
        lines.append(
            f"| {name} | {_cell(arm['mean'], arm['std'])} |{top1} {arm['params']:,} | {arm['mult_adds']:,} | "
            f"{arm['latency_ms']:.2f} |"
        )
    skips = {name: arm.get("skips") for name, arm in report["arms"].items()}
    if len(set(skips.values())) > 1:  # where the shortcuts sit is the claim: say how many each arm has
        counts = ", ".join(f"{name} {count}" for name, count in skips.items())
        lines += ["", f"Residual shortcuts per network: {counts}."]
    lines += ["", "Mean ± sample standard deviation over seeds. Differences (95% Welch interval):", ""]
    for name, diff in report["differences"].items():
        interval = (
            "no interval" if diff["ci95"] is None else f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}]"
        )
        lines.append(
            f"- {name}: {diff['mean']:+.2f} {interval}: {_VERDICTS.get(diff['verdict'], diff['verdict'])}."
        )
    lines += ["", f"The paper's expectation: {report['expectation']}."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> Path:
    """Each arm's metric per seed (dots) and mean ± standard deviation (bar), one PNG."""
    figure = new_figure(1.6 + 1.3 * len(report["arms"]), 3.4)
    axes = figure.subplots()
    for index, arm in enumerate(report["arms"].values()):
        axes.bar(index, arm["mean"], yerr=arm["std"] or 0, color="#9ecae1", capsize=6, width=0.6)
        axes.scatter([index] * len(arm["metric_values"]), arm["metric_values"], color="#08519c", zorder=3)
    axes.set_xticks(range(len(report["arms"])), list(report["arms"]), rotation=10)
    axes.set_ylabel(report["metric"])
    values = [v for arm in report["arms"].values() for v in arm["metric_values"]]
    spread = max(values) - min(values) or 1.0
    axes.set_ylim(min(values) - spread, max(values) + spread)
    axes.set_title(f"{report['claim']}: {report['model']}, {len(report['seeds'])} seeds", fontsize=10)
    return save_png(figure, path)


def _write_text(path: Path, text: str) -> None:
    save_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def write_report(report: AblationReport, out: str | Path) -> dict[str, Any]:
    """Write ``ablation.json``, ``ablation.md`` and ``ablation.png`` into ``out``; return the JSON dict."""
    data = report.to_dict()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    data["files"] = {name: str(root / f"ablation.{name}") for name in ("json", "md", "png")}
    _write_text(root / "ablation.json", json.dumps(data, indent=2) + "\n")
    _write_text(root / "ablation.md", markdown(data))
    plot(data, root / "ablation.png")
    return data
