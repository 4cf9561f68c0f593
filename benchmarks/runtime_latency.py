"""Batch-1 latency of MobileNet v2 in every deployment runtime, fp32/bf16 and int8, side by side.

``mobilenets bench`` (each variant alone in a fresh process, rounds in balanced orders, 2 threads)
over torchvision's model eagerly (the reference), ONNX Runtime, ExecuTorch (XNNPACK) and OpenVINO.
The anchors of issue 21 are ``torchvision_openvino_bf16`` (torchvision's ONNX file read by OpenVINO
with its defaults: bf16 on CPUs that have it) and the faster of ``torchvision_openvino_int8`` and
``torchvision_ort_int8``. At batch 1 every file has a fixed batch of 1, as ``mobilenets export`` and
``torch.onnx.export`` write by default. int8 files are calibrated on random inputs (speed only;
accuracy: ``benchmarks/runtime_accuracy.py``).

The goals are judged by paired comparisons (:mod:`mobilenets.bench.paired`): after the rounds, our
fastest variant and an anchor stay loaded in two processes that take ``--turns`` turns each, and the
verdict is the 95% interval of the median per-turn ratio (int8: against each int8 anchor). Writes
``runs/bench/runtime_latency.json`` and, with ``--markdown``, the ``runtime-latency`` table of
``docs/deployment.md`` (``--fragment runtime-latency-epyc``: the table kept for the AVX-512 EPYC, so
that two machines never share one table). Files are made from seeded random weights, int8 calibrated
on random inputs, unless ``--pretrained``: the packaged weights, int8 calibrated on the first 300
shared ImageNet photos (the files a user deploys; kernel choices and int8 speed can differ).

    python benchmarks/runtime_latency.py --markdown     # ~5 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import CALIBRATION, photo_entries, photos_found, write_photo_list
from mobilenets.bench.inference import NOISY_SPREAD, BenchResult, run_bench
from mobilenets.bench.paired import PairedResult, block_medians, run_pairs
from mobilenets.bench.prepare import bench_calibration
from mobilenets.bench.workfiles import WorkFiles, calibration_tag
from mobilenets.deploy.openvino_export import supports_bf16
from mobilenets.deploy.openvino_kernels import kernel_preferences

OUT = Path("runs/bench/runtime_latency.json")
FLOAT = ("torchvision_eager", "torchvision_ort_fp32", "ours_ort_fp32", "ours_executorch_fp32",
         "torchvision_openvino_bf16", "ours_openvino_fp32", "ours_openvino_bf16")  # fmt: skip
INT8 = ("torchvision_ort_int8", "ours_int8", "ours_executorch_int8", "torchvision_openvino_int8",
        "ours_openvino_int8", "torchvision_openvino_uint8", "ours_openvino_uint8")  # fmt: skip


FLOAT_ANCHOR = "torchvision_openvino_bf16"
INT8_ANCHORS = ("torchvision_ort_int8", "torchvision_openvino_int8")
# Not an anchor: torchvision's int8 IR given the input contract of ours, for a like-for-like ratio.
LIKE_FOR_LIKE = {"ours_openvino_uint8": "torchvision_openvino_uint8"}


def _rounds(result: BenchResult, ours: str, anchor: str) -> str:
    """Median, lowest and highest over rounds of ``ours``'s time over ``anchor``'s in the same round."""
    ratios = [
        statistics.median(mine.times_ms) / statistics.median(theirs.times_ms)
        for mine, theirs in zip(result.reports[ours], result.reports[anchor], strict=True)
    ]
    return f"{statistics.median(ratios):.2f}×, {min(ratios):.2f}–{max(ratios):.2f}×"


def goal_pairs(result: BenchResult) -> list[tuple[str, str]]:
    """The comparisons of issue 21's speed goals: our fastest float variant (by the rounds' medians)
    against OpenVINO's default on torchvision's file, then our fastest int8 variant against each int8
    runtime on torchvision's file (the goal is against the fastest, so ours must beat each one). An
    anchor or a side that was not timed has no pair; :func:`verdict` says so. When our fastest int8
    is the IR taking uint8 input, it is also paired with torchvision's IR taking the same input
    (:data:`LIKE_FOR_LIKE`): how much of the lead is the input contract, which any IR can take."""
    report = result.to_dict()
    median = {
        name: row["median_ms"] for name, row in report.items() if isinstance(row, dict) and "median_ms" in row
    }
    pairs = []
    for ours_names, anchors in ((FLOAT, (FLOAT_ANCHOR,)), (INT8, INT8_ANCHORS)):
        timed = [name for name in ours_names if name.startswith("ours") and name in median]
        if timed:
            fastest = min(timed, key=median.__getitem__)
            pairs += [(fastest, anchor) for anchor in anchors if anchor in median]
            if LIKE_FOR_LIKE.get(fastest) in median:
                pairs.append((fastest, LIKE_FOR_LIKE[fastest]))
    return pairs


def _described(result: BenchResult, pair: PairedResult, goal: float) -> str:
    low, high = pair.interval()
    return (
        f"{pair.first} at {pair.ratio:.3f}× {pair.second} (95% interval {low:.3f}–{high:.3f}× over "
        f"{len(pair.ratios)} paired turns in {len(block_medians(pair.ratios))} blocks: {pair.verdict(goal)}; "
        "the rounds alone: "
        f"{_rounds(result, pair.first, pair.second)})"
    )


def _goal(result: BenchResult, paired: list[PairedResult], anchors: tuple[str, ...], goal: float) -> str:
    """Each anchor's comparison, then the goal's state: met only if met against every anchor; an
    anchor without a comparison (not timed, or ours not timed) leaves the goal not shown.

    A comparison whose variants' rounds spread widely (the table's spread warnings) is not judged: a
    busy machine slows the two graphs unequally, which pairing does not cancel (docs/deployment.md
    shows one pair at 0.657× and 0.871× twenty minutes apart), so its verdict leaves the goal not shown.
    """
    by_anchor = {pair.second: pair for pair in paired}
    said, states = [], set()
    for anchor in anchors:
        if anchor in by_anchor:
            pair = by_anchor[anchor]
            busy = [
                f"{name} {result.noisy[name]:.0%}" for name in (pair.first, anchor) if name in result.noisy
            ]
            if busy:
                said.append(
                    f"{_described(result, pair, goal)}, not judged: the rounds spread over "
                    f"{NOISY_SPREAD:.0%} of their median ({', '.join(busy)}), so the machine was busy; "
                    "rerun it idle"
                )
                states.add("not shown")
            else:
                said.append(_described(result, pair, goal))
                states.add(pair.verdict(goal))
        else:
            why = result.skipped.get(anchor, "it or ours was not timed")
            said.append(f"no comparison with {anchor} ({why})")
            states.add("not shown")
    state = "met" if states == {"met"} else ("not met" if "not met" in states else "not shown")
    return f"{'; '.join(said)}: {state}"


def verdict(result: BenchResult, paired: list[PairedResult]) -> str:
    """The two speed goals, judged by the paired comparisons; the rounds' ratios beside them; then the
    like-for-like comparison of an IR taking uint8 input, where there is one."""
    said = (
        f"Float goal (ours ≤ 1.0× OpenVINO's default): {_goal(result, paired, (FLOAT_ANCHOR,), 1.0)}. "
        "int8 goal (ours ≤ 0.8× the fastest int8 runtime, so against each): "
        f"{_goal(result, paired, INT8_ANCHORS, 0.8)}."
    )
    for pair in paired:
        if LIKE_FOR_LIKE.get(pair.first) == pair.second:
            busy = [name for name in (pair.first, pair.second) if name in result.noisy]
            judged = f" (not judged: {', '.join(busy)} spread widely)" if busy else ""
            said += (
                " Like for like, torchvision's int8 IR taking the same uint8 input: "
                f"{_described(result, pair, 0.8)}{judged}."
            )
    return said


def _precision(name: str, bf16: str) -> str:
    """The table's precision column for variant ``name`` (``bf16``: what OpenVINO's default is here)."""
    if name.endswith("uint8"):
        return "int8, uint8 NHWC input"
    return "int8" if name in INT8 else (bf16 if name.endswith("bf16") else "fp32")


def kernel_note(files: WorkFiles) -> str:
    """Which convolution kernels our IRs ask OpenVINO for (``--kernels tune`` decided at export)."""
    said = []
    for int8, uint8, what in ((False, False, "float"), (True, False, "int8"), (True, True, "uint8-input")):
        path = files.openvino("ours", int8=int8, uint8_input=uint8)
        if path.exists():
            kernels = "OpenVINO's direct kernels" if kernel_preferences(path) else "OpenVINO's own order"
            said.append(f"{what} IR, {kernels}")
    return (
        "Our IRs are exported with `--kernels tune`, which keeps OpenVINO's direct convolution kernels "
        f"where they timed faster on this machine at export: {'; '.join(said) or 'none written'}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--turns", type=int, default=100, help="turns of each paired comparison")
    add_markdown_argument(parser, "deployment.md")
    parser.add_argument(
        "--fragment",
        # the main table; the AVX-512 EPYC's; the EPYC's with the packaged weights
        choices=("runtime-latency", "runtime-latency-epyc", "runtime-latency-epyc-pretrained"),
        default="runtime-latency",
        help="the page's markers to write between",
    )
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="the packaged weights (torchvision's ImageNet mobilenet_v2), int8 calibrated on the first "
        f"{CALIBRATION} shared ImageNet photos as issue 21's accuracy protocol does",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="runtime-latency-") as workdir:  # prepared once for both
        weights: dict[str, Any] = {"pretrained": args.pretrained, "calibration": None}
        if args.pretrained:
            if not photos_found():
                return 1
            listing = write_photo_list(Path(workdir) / "calibration.txt", photo_entries()[:CALIBRATION])
            weights["calibration"] = bench_calibration("mobilenet_v2", 224, str(listing), CALIBRATION)
        result = run_bench(
            "mobilenet_v2", batch=1, resolution=224, threads=args.threads, rounds=args.rounds,
            repeats=args.repeats, warmup=5, only=FLOAT + INT8, workdir=workdir, progress=print, **weights,
        )  # fmt: skip
        paired = run_pairs(
            "mobilenet_v2", goal_pairs(result), threads=args.threads, turns=args.turns,
            workdir=workdir, progress=print, **weights,
        )  # fmt: skip
        calibrated = calibration_tag(weights["calibration"])
        kernels = kernel_note(WorkFiles(Path(workdir), "mobilenet_v2", 1, 224, args.pretrained, calibrated))
    report = {**result.to_dict(), "paired": [pair.to_dict() for pair in paired]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    bf16 = "bf16" if supports_bf16() else "fp32 (OpenVINO's default: no bf16 on this CPU)"
    rows = [
        [name, _precision(name, bf16),
         f"{report[name]['median_ms']:.2f} ± {report[name]['iqr_ms']:.2f}",
         f"{report[name]['speedup_vs_torchvision_eager']:.2f}×", f"{report[name]['peak_rss_mb']:.0f}"]
        for name in FLOAT + INT8
        if name in report
    ]  # fmt: skip
    header = ["variant", "precision", "batch 1 ms (± IQR)", "vs torchvision eager", "peak RSS MB"]
    notes = "".join(f"\n\n{name}: skipped, {why}." for name, why in result.skipped.items())
    warnings = sorted({line.split(":")[0] for line in result.warnings})
    if warnings:
        notes += f"\n\nSpread warnings (IQR over {NOISY_SPREAD:.0%} of the median): {', '.join(warnings)}."
    heading = provenance(time.perf_counter() - started)
    if args.pretrained:
        heading += (
            f" Packaged weights (torchvision's ImageNet mobilenet_v2 on both sides); int8 files calibrated "
            f"on the first {CALIBRATION} shared ImageNet photos."
        )
    text = f"{heading}\n\n{table(header, rows, 'llrrr')}{notes}\n\n{kernels}\n\n{verdict(result, paired)}"
    print(text)
    write_fragments(args.markdown, {args.fragment: text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
