"""The demo's last step: a trained model turned into deployable files, each measured.

From a training checkpoint: the PyTorch model as trained, BatchNorm folded (``optimize``), ONNX fp32
and ONNX int8 (calibrated on training images, never the validation ones), each with its file size,
batch-1 latency (interleaved medians) and validation accuracy. The ONNX files are checked against
PyTorch before they are measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn

from ..bench.latency import measure_interleaved
from ..data.datasets import CachedImages
from ..data.splits import build_loader, load_splits
from ..deploy.onnx_export import OnnxClassifier, export_onnx, max_abs_difference
from ..deploy.optimize import optimize
from ..deploy.quantize import quantize_onnx
from ..errors import ExternalError, UsageError
from ..evaluation.evaluate import evaluate
from ..weights.card import load_trained_model

CALIBRATION_IMAGES = 200
FP32_TOLERANCE = 1e-4


@dataclass(frozen=True)
class DeployRow:
    """One deployable form of the model."""

    name: str
    file: str
    size_bytes: int
    latency_ms: float
    top1: float


def _size_of_state(model: nn.Module) -> int:
    return len(save({k: v.contiguous() for k, v in model.state_dict().items()}))


def _forward(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


def deploy_report(checkpoint: Path, out: Path, *, threads: int = 2, repeats: int = 20) -> list[DeployRow]:
    """Export ``checkpoint`` (a digits or image-folder run) to ``out`` and measure every form of it."""
    trained = load_trained_model(checkpoint)
    card = trained.card
    splits = load_splits(card.data, img_size=card.img_size, val_split=card.val_split, seed=card.seed)
    if not isinstance(splits.train, CachedImages) or not isinstance(splits.val, CachedImages):
        raise UsageError(f"deploy_report needs a cached data set (digits, small folders); got {card.data!r}")
    count = min(CALIBRATION_IMAGES, len(splits.train))
    calibration_set = CachedImages(
        splits.train.images[:count], splits.train.labels[:count], splits.val.transform
    )
    calibration = next(iter(build_loader(calibration_set, batch_size=count, train=False, seed=0)))[0]
    val_batches = list(build_loader(splits.val, batch_size=64, train=False, seed=card.seed))

    out.mkdir(parents=True, exist_ok=True)
    fp32_path = export_onnx(
        trained.model, out / "model.onnx", resolution=card.img_size, card=card, dynamic_batch=True
    )
    difference = max_abs_difference(
        trained.model, OnnxClassifier(fp32_path), [images for images, _ in val_batches]
    )
    if difference > FP32_TOLERANCE:
        raise ExternalError(
            f"ONNX Runtime differs from PyTorch by {difference:.3g} on the validation images; "
            "the demo's ONNX export is not trustworthy with this onnxruntime"
        )
    int8_path = quantize_onnx(fp32_path, out / "model.int8.onnx", calibration)

    forms: dict[str, tuple[nn.Module, str, int]] = {
        "PyTorch (as trained, channels_last)": (
            trained.model.to(memory_format=torch.channels_last),
            str(checkpoint),
            _size_of_state(trained.model),
        ),
        "PyTorch optimize (BN folded, frozen)": (
            optimize(trained.model, resolution=card.img_size),
            "(in memory)",
            _size_of_state(optimize(trained.model, resolution=card.img_size, mode="eager")),
        ),
        "ONNX Runtime fp32": (OnnxClassifier(fp32_path, threads), str(fp32_path), fp32_path.stat().st_size),
        "ONNX Runtime int8": (OnnxClassifier(int8_path, threads), str(int8_path), int8_path.stat().st_size),
    }
    example = val_batches[0][0][:1]
    latency = measure_interleaved(
        {name: functools.partial(_forward, module, example) for name, (module, _, _) in forms.items()},
        repeats=repeats,
        warmup=3,
        threads=threads,
        settle=1,
        block=5,
    )
    rows = []
    for name, (module, file, size) in forms.items():
        metrics = evaluate(module, val_batches, device="cpu", channels_last=False)
        rows.append(DeployRow(name, file, size, latency[name].median_ms, metrics.top1))
    return rows


def deploy_table(rows: list[DeployRow]) -> str:
    """The rows as a Markdown table."""
    lines = ["| form | size | batch-1 latency | val top-1 | file |", "|---|---:|---:|---:|---|"]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.size_bytes / 1e6:.2f} MB | {row.latency_ms:.2f} ms | {100 * row.top1:.1f}% "
            f"| `{row.file}` |"
        )
    return "\n".join(lines)
