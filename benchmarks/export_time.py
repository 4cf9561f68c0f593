"""How long `mobilenets export` takes: the exporters' in-place activations and ORT's int8 calibration.

Two speed-ups of the export paths, each timed against what it replaced, every variant alone in its own
process (rounds alternating which goes first), as a user's ``mobilenets export`` meets it (the first
export of the process):

- ``onnx``: ``export_onnx`` of the model at ``--resolution`` with a dynamic batch, with the model's
  in-place activations as built ("before") or switched out of place for the export
  (:func:`mobilenets.deploy.fuse.out_of_place`, what ``export_onnx`` does);
- ``openvino``: ``export_openvino`` (torch.export, then ``openvino.convert_model``), the same two ways;
- ``int8``: ``quantize_onnx`` (percentile calibration) of that ONNX file on ``--calib-images`` random
  images, with ONNX Runtime's histogram collector as it is ("before") or one tensor per thread, each
  value binned from the bins' spacing instead of by sorting (:mod:`mobilenets.deploy.parallel_histograms`,
  what ``quantize_onnx`` does). The two int8 files are compared byte for byte.

    python benchmarks/export_time.py --markdown    # ~8 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import mobilenets
from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import in_own_process
from mobilenets.deploy import export_onnx, onnx_export, openvino_export, quantize_onnx
from mobilenets.deploy import quantize as quantize_module

STEPS = ("onnx", "openvino", "int8")
VARIANTS = ("before", "now")
LABELS = {
    "onnx": ("ONNX export", "in-place activations", "out of place"),
    "openvino": ("OpenVINO export", "in-place activations", "out of place"),
    "int8": ("int8 calibration (`quantize_onnx`)", "ORT's histograms", "one tensor per thread, no sort"),
}


def measure(args: argparse.Namespace, step: str, variant: str) -> dict[str, Any]:
    """Seconds of one export ``step`` in this process, the ``before`` way or as the library does now."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the same weights in every process: the int8 files can be compared
    model = mobilenets.create_model(args.model).eval()
    if variant == "before" and step == "int8":  # undo the speed-up being measured, only that one
        quantize_module.parallel_histograms = contextlib.nullcontext  # type: ignore[assignment]
    elif variant == "before":
        onnx_export.out_of_place = openvino_export.out_of_place = lambda m: m  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "m.onnx", Path(folder) / "m.int8.onnx"
        started = time.perf_counter()
        if step == "openvino":
            openvino_export.export_openvino(model, Path(folder) / "m.xml", resolution=args.resolution)
            return {"seconds": time.perf_counter() - started}
        export_onnx(model, fp32, resolution=args.resolution, dynamic_batch=True)
        if step == "onnx":
            return {"seconds": time.perf_counter() - started}
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(args.calib_images, 3, args.resolution, args.resolution, generator=generator)
        started = time.perf_counter()
        quantize_onnx(fp32, int8, images)
        seconds = time.perf_counter() - started
        return {"seconds": seconds, "sha1": hashlib.sha1(int8.read_bytes()).hexdigest()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--calib-images", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="processes per variant, alternating order")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    if min(args.rounds, args.threads, args.calib_images) < 1:
        parser.error("--rounds, --threads and --calib-images must be at least 1")
    if args.child:
        print(json.dumps(measure(args, *args.child)))
        return 0
    started = time.perf_counter()
    rows = []
    for step in args.steps:
        runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
        for round_ in range(args.rounds):
            for variant in VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]:
                runs[variant].append(in_own_process(__file__, step, variant))
        before, now = (statistics.median(r["seconds"] for r in runs[v]) for v in VARIANTS)
        same = ""
        if step == "int8":
            hashes = {r["sha1"] for v in VARIANTS for r in runs[v]}
            same = "yes" if len(hashes) == 1 else f"no ({len(hashes)} different files)"
        label, old, new = LABELS[step]
        rows.append([label, old, f"{before:.1f}", new, f"{now:.1f}", f"{before / now:.2f}×", same])
    header = ["step", "before", "s", "now", "s", "speed-up", "same int8 file"]
    body = table(header, rows, "llrlrrl")
    summary = (
        f"`{args.model}` at {args.resolution} px, dynamic batch, {args.threads} threads; int8: percentile "
        f"calibration on {args.calib_images} random images. Medians of {args.rounds} processes per variant, "
        "each timing the first export of its process, as `mobilenets export` does."
    )
    text = f"{provenance(time.perf_counter() - started)}\n\n{body}\n\n{summary}"
    print(text)
    write_fragments(args.markdown, {"export-time": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
