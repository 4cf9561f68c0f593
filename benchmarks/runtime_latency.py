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
import sys
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, provenance, table, write_fragments
from mobilenets.bench.inference import run_bench

OUT = Path("runs/bench/runtime_latency.json")
FLOAT = ("torchvision_eager", "torchvision_ort_fp32", "ours_ort_fp32", "ours_executorch_fp32",
         "torchvision_openvino_bf16", "ours_openvino_fp32", "ours_openvino_bf16")  # fmt: skip
INT8 = ("torchvision_ort_int8", "ours_int8", "ours_executorch_int8", "torchvision_openvino_int8",
        "ours_openvino_int8")  # fmt: skip


def verdict(report: dict[str, Any]) -> str:
    """The two speed goals of issue 21, from the medians."""
    median = {
        name: row["median_ms"] for name, row in report.items() if isinstance(row, dict) and "median_ms" in row
    }
    ours_float = min((n for n in FLOAT if n.startswith("ours") and n in median), key=median.__getitem__)
    ours_int8 = min((n for n in INT8 if n.startswith("ours") and n in median), key=median.__getitem__)
    anchor_int8 = min(
        (n for n in INT8 if n.startswith("torchvision") and n in median), key=median.__getitem__
    )
    float_ratio = median[ours_float] / median["torchvision_openvino_bf16"]
    int8_ratio = median[ours_int8] / median[anchor_int8]
    return (
        f"Float goal (ours ≤ 1.0× OpenVINO's default): {ours_float} at {float_ratio:.2f}× "
        f"torchvision_openvino_bf16, {'met' if float_ratio <= 1.0 else 'not met'}. "
        f"int8 goal (ours ≤ 0.8× the fastest int8 runtime): {ours_int8} at {int8_ratio:.2f}× {anchor_int8}, "
        f"{'met' if int8_ratio <= 0.8 else 'not met'}."
    )


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
    text = f"{heading}\n\n{table(header, rows, 'llrrr')}{notes}\n\n{verdict(report)}"
    print(text)
    write_fragments(args.markdown, {"runtime-latency": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
