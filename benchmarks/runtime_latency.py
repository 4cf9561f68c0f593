"""Batch-1 latency of MobileNet v2 in every deployment runtime, fp32/bf16 and int8, side by side.

``mobilenets bench`` (each variant alone in a fresh process, rounds in rotated order, 2 threads)
over torchvision's model eagerly (the reference), ONNX Runtime, ExecuTorch (XNNPACK) and OpenVINO.
The anchors of issue 21 are ``torchvision_openvino_bf16`` (torchvision's ONNX file read by OpenVINO
with its defaults: bf16 on CPUs that have it) and the faster of ``torchvision_openvino_int8`` and
``torchvision_ort_int8``. int8 files are calibrated on random inputs (speed only; accuracy:
``benchmarks/runtime_accuracy.py``). Writes ``runs/bench/runtime_latency.json`` and, with
``--markdown``, the ``runtime-latency`` table of ``docs/deployment.md``.

    python benchmarks/runtime_latency.py --markdown     # ~10 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.bench.inference import BenchResult, run_bench

OUT = Path("runs/bench/runtime_latency.json")
FLOAT = ("torchvision_eager", "torchvision_ort_fp32", "ours_ort_fp32", "ours_executorch_fp32",
         "torchvision_openvino_bf16", "ours_openvino_fp32", "ours_openvino_bf16")  # fmt: skip
INT8 = ("torchvision_ort_int8", "ours_int8", "ours_executorch_int8", "torchvision_openvino_int8",
        "ours_openvino_int8")  # fmt: skip


def _paired(result: BenchResult, ours: str, anchor: str) -> tuple[float, float, float]:
    """Median, lowest and highest over rounds of ``ours``'s time over ``anchor``'s in the same round.

    Rounds take turns, so a slow spell of the shared VM hits both sides of a round's ratio: paired
    ratios vary far less than each variant's own times.
    """
    ratios = [
        statistics.median(mine.times_ms) / statistics.median(theirs.times_ms)
        for mine, theirs in zip(result.reports[ours], result.reports[anchor], strict=True)
    ]
    return statistics.median(ratios), min(ratios), max(ratios)


def verdict(result: BenchResult) -> str:
    """The two speed goals of issue 21: our fastest variant over the anchor, round by round."""
    report = result.to_dict()
    median = {
        name: row["median_ms"] for name, row in report.items() if isinstance(row, dict) and "median_ms" in row
    }
    ours_float = min((n for n in FLOAT if n.startswith("ours") and n in median), key=median.__getitem__)
    ours_int8 = min((n for n in INT8 if n.startswith("ours") and n in median), key=median.__getitem__)
    anchor_int8 = min(
        (n for n in INT8 if n.startswith("torchvision") and n in median), key=median.__getitem__
    )
    lines = []
    for label, ours, anchor, goal in (
        ("Float goal (ours ≤ 1.0× OpenVINO's default)", ours_float, "torchvision_openvino_bf16", 1.0),
        ("int8 goal (ours ≤ 0.8× the fastest int8 runtime)", ours_int8, anchor_int8, 0.8),
    ):
        ratio, low, high = _paired(result, ours, anchor)
        met = sum(
            statistics.median(mine.times_ms) <= goal * statistics.median(theirs.times_ms)
            for mine, theirs in zip(result.reports[ours], result.reports[anchor], strict=True)
        )
        state = "met" if high <= goal else ("not met" if low > goal else "not shown: the rounds disagree")
        lines.append(
            f"{label}: {ours} at {ratio:.2f}× {anchor} (rounds {low:.2f}–{high:.2f}×; within the goal in "
            f"{met} of {result.rounds}), {state}."
        )
    return " ".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run_bench(
        "mobilenet_v2", batch=1, resolution=224, threads=args.threads, rounds=args.rounds,
        repeats=args.repeats, warmup=5, only=FLOAT + INT8,
    )  # fmt: skip
    report = result.to_dict()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        [name, "int8" if name in INT8 else ("bf16" if name.endswith("bf16") else "fp32"),
         f"{report[name]['median_ms']:.2f} ± {report[name]['iqr_ms']:.2f}",
         f"{report[name]['speedup_vs_torchvision_eager']:.2f}×", f"{report[name]['peak_rss_mb']:.0f}"]
        for name in FLOAT + INT8
        if name in report
    ]  # fmt: skip
    header = ["variant", "precision", "batch 1 ms (± IQR)", "vs torchvision eager", "peak RSS MB"]
    notes = "".join(f"\n\n{name}: skipped, {why}." for name, why in result.skipped.items())
    warnings = sorted({line.split(":")[0] for line in result.warnings})
    if warnings:
        notes += f"\n\nSpread warnings (IQR over 25% of the median): {', '.join(warnings)}."
    heading = provenance(time.perf_counter() - started)
    text = f"{heading}\n\n{table(header, rows, 'llrrr')}{notes}\n\n{verdict(result)}"
    print(text)
    write_fragments(args.markdown, {"runtime-latency": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
