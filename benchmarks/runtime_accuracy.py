"""Top-1 of every deployment runtime's int8 and bf16 against fp32, for both packaged weights.

Protocol (issue 21): calibrate on the first 300 photos of ``imagenet-val-1300/dataset.txt``, evaluate
on the other 1,000. Rows: ONNX Runtime int8 (``export --int8``'s default), ExecuTorch int8 (XNNPACK's
quantizer), OpenVINO int8 (NNCF); OpenVINO bf16 and PyTorch bf16 (autocast); each against the same
weights in PyTorch fp32. Every row is the commands a user runs: ``mobilenets export ... --json`` then
``mobilenets eval ... --json``.

The shifted check calibrates on the same 300 photos zoomed in (their central 60%, so objects look
1.7× larger; written as PNGs to a temporary folder, never into the repository) and evaluates on the
standard 1,000: a calibration set that does not look like what the model will see.

    python benchmarks/runtime_accuracy.py --markdown     # ~25 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import CALIBRATION, PHOTOS, held_out_list, photo_entries, photos_found, write_photo_list

OUT = Path("runs/bench/runtime_accuracy")
ZOOM = 0.6  # the shifted calibration keeps this central fraction of each photo's side
WEIGHTS = ("torchvision_mobilenet_v2", "efficientnet_lite0")
INT8 = (("onnx", ".onnx", "--onnx"), ("executorch", ".pte", "--pte"), ("openvino", ".xml", "--openvino"))
RUNTIME_NAMES = {"onnx": "ONNX Runtime", "executorch": "ExecuTorch (XNNPACK)", "openvino": "OpenVINO (NNCF)"}


def _cli(*args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "mobilenets", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mobilenets {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def zoomed_calibration(folder: Path) -> Path:
    """The calibration photos' central ``ZOOM`` crops, saved as PNGs in ``folder``, as a list file."""
    entries = []
    for index, (path, label) in enumerate(photo_entries()[:CALIBRATION]):
        with Image.open(path) as image:
            width, height = image.size
            w, h = round(width * ZOOM), round(height * ZOOM)
            left, top = (width - w) // 2, (height - h) // 2
            target = folder / f"{index:04d}.png"
            image.convert("RGB").crop((left, top, left + w, top + h)).save(target)
        entries.append((target, label))
    return write_photo_list(folder / "calibration.txt", entries)


def _eval(flag: str, value: str, data: Path, *extra: str) -> float:
    report = _cli("eval", flag, value, "--data", str(data), "--json", "--no-confusion", *extra)
    return float(report["top1"])


def measure(weights: str, held_out: Path, shifted: Path) -> list[dict[str, Any]]:
    """fp32, bf16 and each runtime's int8 (standard and shifted calibration) of ``weights``."""
    fp32 = _eval("--pretrained", weights, held_out)
    rows: list[dict[str, Any]] = []

    def row(runtime: str, precision: str, calibration: str, top1: float, megabytes: float | None) -> None:
        entry = {
            "weights": weights,
            "runtime": runtime,
            "precision": precision,
            "calibration": calibration,
            "fp32_top1": fp32,
            "top1": top1,
            "drop_points": round(100 * (fp32 - top1), 2),
            "file_mb": megabytes,
        }
        rows.append(entry)
        print(json.dumps(entry), flush=True)

    row(
        "PyTorch (autocast)",
        "bf16",
        "-",
        _eval("--pretrained", weights, held_out, "--precision", "bf16"),
        None,
    )
    ir = OUT / f"{weights}.xml"
    exported = _cli("export", "--pretrained", weights, "--format", "openvino", "--out", str(ir), "--json")
    megabytes = round(exported["bytes"] / 1e6, 1)
    row("OpenVINO", "bf16", "-", _eval("--openvino", str(ir), held_out, "--precision", "bf16"), megabytes)
    for name, calib in (("300 photos", PHOTOS), ("300 photos zoomed 1.7x", shifted)):
        for runtime, suffix, flag in INT8:
            out = OUT / f"{weights}.{'shift' if calib == shifted else 'std'}.int8{suffix}"
            exported = _cli(
                "export", "--pretrained", weights, "--format", runtime, "--out", str(out), "--dynamic-batch",
                "--int8", "--calib", str(calib), "--calib-images", str(CALIBRATION), "--json",
            )  # fmt: skip
            top1 = _eval(flag, str(out), held_out)
            row(RUNTIME_NAMES[runtime], "int8", name, top1, round(exported["bytes"] / 1e6, 1))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    header = ["weights", "runtime", "precision", "calibrated on", "fp32 top-1", "top-1", "drop", "file MB"]
    cells = [
        [row["weights"], row["runtime"], row["precision"], row["calibration"],
         f"{100 * row['fp32_top1']:.1f}%", f"{100 * row['top1']:.1f}%", f"{row['drop_points']:+.1f}",
         row["file_mb"] or "-"]
        for row in rows
    ]  # fmt: skip
    return table(header, cells, "llllrrrr")


def verdict(rows: list[dict[str, Any]]) -> str:
    int8 = [row for row in rows if row["precision"] == "int8"]
    bf16 = [row for row in rows if row["precision"] == "bf16"]
    worst_int8 = max(int8, key=lambda row: row["drop_points"])
    worst_bf16 = max(bf16, key=lambda row: abs(row["drop_points"]))
    met = worst_int8["drop_points"] <= 1.0
    return (
        f"Goal, every int8 file within 1.0 point of fp32, standard and shifted calibration: "
        f"{'met' if met else 'not met'} (worst {worst_int8['drop_points']:+.1f}, {worst_int8['weights']} "
        f"{worst_int8['runtime']}, calibrated on {worst_int8['calibration']}). bf16 moves top-1 by at most "
        f"{abs(worst_bf16['drop_points']):.1f} points (goal 0.2)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=list(WEIGHTS), help="registry names")
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    if not photos_found():
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    held_out = held_out_list(OUT)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        shifted = zoomed_calibration(Path(scratch))
        for weights in args.weights:
            rows += measure(weights, held_out, shifted)
    (OUT / "result.json").write_text(json.dumps(rows, indent=2) + "\n")
    text = f"{provenance(time.perf_counter() - started)}\n\n{markdown(rows)}\n\n{verdict(rows)}"
    print("\n" + text)
    write_fragments(args.markdown, {"runtime-accuracy": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
