"""int8 in PyTorch (torchao's PT2E flow) against fp32 on real photos, for both pretrained models.

The protocol of ``benchmarks/int8_accuracy.py``: calibrate on the first 300 photos of
``imagenet-val-1300/dataset.txt``, evaluate on the other 1,000, but all in PyTorch: fp32, the int8
graph run as it is (quantize / dequantize simulated around float convolutions) and the same graph
compiled by Inductor into int8 kernels (``compile_int8``), the form that runs fast. The two int8
columns differ where the int8 kernels saturate (x86 without VNNI, 8-bit activations). Extra rows
show the settings' worth (8-bit activations, the x86 default; float stem and classifier). The QAT
rows fine-tune with fake quantization (``quantize_qat_pt2e``: distilling the float model, no labels)
on the 300 calibration photos instead of calibrating only. Writes ``runs/bench/int8_pt2e/result.json`` (with
``--qat``: ``result_qat.json``) and Markdown tables; ``--markdown`` also writes them into
``docs/deployment.md`` (markers ``int8-pt2e``, ``int8-pt2e-ablations``, with ``--qat`` ``int8-pt2e-qat``).

    python benchmarks/int8_pt2e.py                 # ~7 minutes on 2 cores
    python benchmarks/int8_pt2e.py --quick         # the default settings only
    python benchmarks/int8_pt2e.py --qat           # the QAT rows only (~10 minutes)
    python benchmarks/int8_pt2e.py --no-compile    # simulated int8 only
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from _report import add_markdown_argument, provenance, table, write_fragments
from _shared import CALIBRATION, PHOTOS, photos_found
from mobilenets.bench.allocator import reuse_freed_memory
from mobilenets.data.card import card_eval_set
from mobilenets.data.splits import build_loader
from mobilenets.deploy.pt2e import compile_int8, quantize_pt2e
from mobilenets.deploy.pt2e_qat import quantize_qat_pt2e
from mobilenets.weights import TrainedModel, get_pretrained, load_pretrained

OUT = Path("runs/bench/int8_pt2e")
BATCH = 50
QAT_BATCH = 32

# (weights, label, quantize_pt2e options)
ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("torchvision_mobilenet_v2", "default (7-bit activations)", {}),
    ("efficientnet_lite0", "default (7-bit activations)", {}),
)
ABLATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("torchvision_mobilenet_v2", "8-bit activations (x86 default)", {"reduce_range": False}),
    ("torchvision_mobilenet_v2", "8-bit activations, stem + classifier float",
     {"reduce_range": False, "keep_float": ["stem", "classifier"]}),
    ("efficientnet_lite0", "8-bit activations (x86 default)", {"reduce_range": False}),
)  # fmt: skip
QAT_ROWS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("torchvision_mobilenet_v2", "QAT, 2 epochs (7-bit activations)", {"qat_epochs": 2}),
    ("torchvision_mobilenet_v2", "QAT, 2 epochs, 8-bit activations",
     {"qat_epochs": 2, "reduce_range": False}),
)  # fmt: skip


Photos = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def photos(trained: TrainedModel) -> Photos:
    """The calibration images (the first 300), then the held-out images and their labels, prepared."""
    dataset, _ = card_eval_set(trained.card, str(PHOTOS))

    def load(indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        loader = build_loader(Subset(dataset, indices), batch_size=100, train=False, seed=0)
        images, labels = zip(*loader, strict=True)
        return torch.cat(images), torch.cat(labels)

    calibration, _ = load(range(CALIBRATION))
    held_out, labels = load(range(CALIBRATION, len(dataset)))  # type: ignore[arg-type]
    return calibration, held_out, labels


def quantize(trained: TrainedModel, data: Photos, options: dict[str, Any]) -> nn.Module:
    """Post-training int8 calibrated on the calibration photos, or fine-tuned on them (``qat_epochs``)."""
    calibration = data[0]
    options = dict(options)
    epochs = options.pop("qat_epochs", None)
    resolution = trained.card.img_size
    if epochs is None:
        return quantize_pt2e(trained.model, calibration.split(BATCH), resolution=resolution, **options)
    batches = calibration.split(QAT_BATCH)
    return quantize_qat_pt2e(trained.model, batches, resolution=resolution, epochs=epochs, **options)


def top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = 0
    with torch.inference_mode():
        for batch, target in zip(images.split(BATCH), labels.split(BATCH), strict=True):
            correct += int((model(batch).argmax(1) == target).sum())
    return correct / len(labels)


def markdown(results: list[dict[str, Any]]) -> str:
    header = ["weights", "settings", "fp32 top-1", "int8, simulated", "int8, compiled", "drop (points)"]
    cells = []
    for row in results:
        compiled = row["int8_compiled_top1"]
        cells.append([
            row["weights"], row["settings"], f"{100 * row['fp32_top1']:.1f}%",
            f"{100 * row['int8_eager_top1']:.1f}%", "—" if compiled is None else f"{100 * compiled:.1f}%",
            f"{row['drop_points']:+.1f}",
        ])  # fmt: skip
    return table(header, cells, "llrrrr")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="default settings only, no ablations")
    parser.add_argument("--qat", action="store_true", help="only the quantization-aware fine-tuning rows")
    parser.add_argument("--no-compile", action="store_true", help="skip the Inductor-compiled int8 column")
    add_markdown_argument(parser, "deployment.md")
    args = parser.parse_args()
    started = time.perf_counter()
    if not photos_found():
        return 1
    reuse_freed_memory()  # eager int8 runs ~7x slower with glibc's default of unmapping freed memory
    OUT.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    loaded: dict[str, tuple[TrainedModel, Photos, float]] = {}
    rows = QAT_ROWS if args.qat else ROWS + (() if args.quick else ABLATIONS)
    for key, label, options in rows:
        if key not in loaded:
            entry = get_pretrained(key)
            trained = load_pretrained(entry.path(), model=entry.model, **entry.model_kwargs)
            data = photos(trained)
            loaded[key] = trained, data, top1(trained.model, data[1], data[2])
        trained, data, fp32 = loaded[key]
        calibration, held_out, labels = data
        start = time.perf_counter()
        int8 = quantize(trained, data, options)
        quantize_seconds = time.perf_counter() - start
        simulated = top1(int8, held_out, labels)
        compiled = compile_seconds = None
        if not args.no_compile:
            fast = compile_int8(int8)
            start = time.perf_counter()
            with torch.inference_mode():
                fast(held_out[:BATCH])  # compiles for the batch shape (and grad mode) used below
            compile_seconds = round(time.perf_counter() - start, 1)
            compiled = top1(fast, held_out, labels)
        row: dict[str, Any] = {
            "weights": key,
            "settings": label,
            "images": len(labels),
            "calibration_images": len(calibration),
            "fp32_top1": fp32,
            "int8_eager_top1": simulated,
            "int8_compiled_top1": compiled,
            "drop_points": round(100 * (fp32 - (simulated if compiled is None else compiled)), 2),
            "quantize_seconds": round(quantize_seconds, 1),
            "compile_seconds": compile_seconds,
            "options": dict(options),
        }
        results.append(row)
        print(json.dumps(row), flush=True)
    result_file = OUT / ("result_qat.json" if args.qat else "result.json")
    result_file.write_text(json.dumps(results, indent=2) + "\n")
    stamp = provenance(time.perf_counter() - started)
    note = "drop: fp32 minus the compiled int8 top-1 (the simulated one with --no-compile), in points."
    if args.qat:
        fragments = {"int8-pt2e-qat": f"{stamp}\n\n{markdown(results)}\n\n{note}"}
    else:
        fragments = {"int8-pt2e": f"{stamp}\n\n{markdown(results[: len(ROWS)])}\n\n{note}"}
        if len(results) > len(ROWS):
            fragments["int8-pt2e-ablations"] = f"{stamp}\n\n{markdown(results[len(ROWS) :])}"
    for text in fragments.values():
        print("\n" + text)
    write_fragments(args.markdown, fragments)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
