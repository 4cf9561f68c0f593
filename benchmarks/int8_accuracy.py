"""int8 against fp32 on real photos, for every entry of the pretrained registry.

Protocol: calibrate on the first 300 photos of ``imagenet-val-1300/dataset.txt``, evaluate fp32 and
int8 (both in ONNX Runtime) on the other 1,000. Each row is ``mobilenets export --pretrained NAME
--int8`` then two ``mobilenets eval --onnx``; ``--record`` writes the default rows' drops into the
registry's ``measured.json`` (``mobilenets list --pretrained``). Extra rows show what the settings
are worth (full 8-bit or uint8 weights instead of int7, min-max instead of percentile calibration,
float stem and classifier).
Writes ``runs/bench/int8/result.json`` and Markdown tables; ``--markdown`` also writes them into
``docs/deployment.md`` (the ``int8-accuracy`` markers; the ablations between ``int8-accuracy-ablations``).

    python benchmarks/int8_accuracy.py             # ~25 minutes on 2 cores
    python benchmarks/int8_accuracy.py --quick     # the default settings only (one table)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _report import add_markdown_argument, command_line, provenance, record_measured, table, write_fragments
from _shared import CALIBRATION, PHOTOS, held_out_list, photos_found
from mobilenets.deploy.quantize import default_weight_dtype
from mobilenets.weights import PRETRAINED, get_pretrained

OUT = Path("runs/bench/int8")

# (weights, label, extra export options)
ROWS = tuple((name, f"default (percentile, {default_weight_dtype()} weights)", []) for name in PRETRAINED)
ABLATIONS = (
    ("torchvision_mobilenet_v2", "int8 weights (u8s8 saturates without VNNI)", ["--weight-dtype", "int8"]),
    ("torchvision_mobilenet_v2", "uint8 weights (u8u8: accurate, slower)", ["--weight-dtype", "uint8"]),
    ("torchvision_mobilenet_v2", "min-max calibration", ["--calib-method", "minmax"]),
    ("torchvision_mobilenet_v2", "int8 weights, stem + classifier float",
     ["--weight-dtype", "int8", "--keep-float", "stem,classifier"]),
    ("efficientnet_lite0", "int8 weights", ["--weight-dtype", "int8"]),
    ("efficientnet_lite0", "uint8 weights", ["--weight-dtype", "uint8"]),
)  # fmt: skip


def _cli(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "mobilenets", *args], check=True, capture_output=True, text=True
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def markdown(rows: list[dict[str, Any]]) -> str:
    """One table row per result; drop = fp32 minus int8 top-1, in points (negative: int8 scored higher)."""
    header = ["weights", "settings", "fp32 top-1", "int8 top-1", "drop (points)", "fp32 MB", "int8 MB"]
    cells = [
        [row["weights"], row["settings"], f"{100 * row['fp32_top1']:.1f}%", f"{100 * row['int8_top1']:.1f}%",
         f"{row['drop_points']:+.1f}", row["fp32_mb"], row["int8_mb"]]
        for row in rows
    ]  # fmt: skip
    return table(header, cells, "llrrrrr")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="default settings only, no ablations")
    parser.add_argument("--record", action="store_true", help="write the default rows into measured.json")
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    if not photos_found():
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    held_out = held_out_list(OUT)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for index, (key, label, options) in enumerate(ROWS + (() if args.quick else ABLATIONS)):
        entry = get_pretrained(key)
        out = OUT / f"{key}_{index}.onnx"
        start = time.perf_counter()
        exported = _cli(
            "export", "--pretrained", entry.name, "--out", str(out),
            "--dynamic-batch", "--int8", "--calib", str(PHOTOS), "--calib-images", str(CALIBRATION), "--json",
            *options,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        fp32 = _cli("eval", "--onnx", str(out.with_suffix(".fp32.onnx")), "--data", str(held_out), "--json")
        int8 = _cli("eval", "--onnx", str(out), "--data", str(held_out), "--json")
        row = {
            "weights": key,
            "settings": label,
            "fp32_top1": fp32["top1"],
            "int8_top1": int8["top1"],
            "drop_points": round(100 * (fp32["top1"] - int8["top1"]), 2),
            "fp32_mb": round(exported["fp32_bytes"] / 1e6, 1),
            "int8_mb": round(exported["int8_bytes"] / 1e6, 1),
            "export_seconds": round(seconds, 1),
            "options": " ".join(options),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    (OUT / "result.json").write_text(json.dumps(results, indent=2) + "\n")
    defaults, ablations = results[: len(ROWS)], results[len(ROWS) :]
    if args.record:
        fields = ("fp32_top1", "int8_top1", "drop_points")
        record_measured(
            {
                get_pretrained(row["weights"]).name: {
                    **{f"int8_{key}" if key == "drop_points" else key: row[key] for key in fields},
                    "int8_images": 1300 - CALIBRATION,
                    "by": command_line(),
                }
                for row in defaults
            }
        )
    drops = ", ".join(f"{row['drop_points']:+.1f}" for row in defaults)
    worst = max(row["drop_points"] for row in defaults)
    verdict = (
        f"Goal, int8 within 1.0 point of fp32 with the default settings: "
        f"{'met' if worst <= 1.0 else 'not met'} (drops {drops} points)."
    )
    provenance_line = provenance(time.perf_counter() - started)
    fragments = {"int8-accuracy": f"{provenance_line}\n\n{markdown(defaults)}\n\n{verdict}"}
    if ablations:
        fragments["int8-accuracy-ablations"] = f"{provenance_line}\n\n{markdown(ablations)}"
    for text in fragments.values():
        print("\n" + text)
    write_fragments(args.markdown, fragments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
