"""``mobilenets export``: a model or weights file → a checked ONNX (fp32, or int8 calibrated),
TorchScript (``.pt``) or torch.export (``.pt2``, fp32 or PT2E int8, calibrated or quantization-aware
fine-tuned) file.

Before it declares success, the command reloads the file (ONNX Runtime, ``torch.jit.load`` or
``torch.export.load``), runs it on real images (the calibration or verification data, else the
checkpoint's own data) and compares with PyTorch: fp32 must agree to ``--tolerance`` (default 1e-4, max
abs difference of the logits), int8 reports its top-1 agreement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..deploy.pt2e_qat import DEFAULT_LR as DEFAULT_QAT_LR
from ..deploy.quantize import CALIBRATION_METHODS, WEIGHT_DTYPES
from ..errors import ExternalError, UsageError
from .common import add_weights_arguments, check_resolution, foreign_model_kwargs, load_from_args

if TYPE_CHECKING:
    from ..weights.card import ModelCard

DEFAULT_TOLERANCE = 1e-4
FORMATS = ("onnx", "torchscript", "exported-program")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
# int8 options: None (unset) unless given, so formats without them can refuse them. ONNX quantizes in
# ONNX Runtime; an exported program through torchao's PT2E flow, which has no method or weight choice.
INT8_OPTIONS = {
    "int8": "--int8",
    "calib": "--calib",
    "calib_images": "--calib-images",
    "keep_float": "--keep-float",
}
ONNX_ONLY = {"calib_method": "--calib-method", "weight_dtype": "--weight-dtype"}
QAT_OPTIONS = {"qat_epochs": "--qat-epochs", "qat_lr": "--qat-lr"}  # PT2E (exported-program) int8 only
INT8_FORMATS = ("onnx", "exported-program")
DEFAULT_CALIB_IMAGES = 300
DEFAULT_CALIB_METHOD = "percentile"
DEFAULT_WEIGHT_DTYPE = "int7"
QAT_BATCH = 32


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export", help="export to ONNX (fp32 or int8), TorchScript or torch.export, verified on reload"
    )
    parser.add_argument(
        "model_name", nargs="?", default=None, metavar="MODEL", help="a model name, untrained"
    )
    add_weights_arguments(parser, required=False)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (.onnx), torchscript (traced, frozen: .pt) or exported-program (torch.export: .pt2); "
        "default onnx",
    )
    parser.add_argument("--out", required=True, type=Path, help="output file (the int8 model with --int8)")
    parser.add_argument("--resolution", type=int, default=None, help="input size (default: the weights')")
    parser.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="leave the batch dimension free (otherwise 1; TorchScript takes any batch either way)",
    )
    int8 = parser.add_argument_group(
        "int8 quantization (--format onnx: ONNX Runtime; exported-program: torchao PT2E)"
    )
    int8.add_argument(
        "--int8",
        action="store_true",
        default=None,
        help="quantize (ONNX: the fp32 file goes to OUT.fp32.onnx)",
    )
    int8.add_argument("--calib", default=None, help="calibration images: a folder or labelled list file")
    int8.add_argument(
        "--calib-images",
        type=int,
        default=None,
        help=f"first N images calibrate (default {DEFAULT_CALIB_IMAGES})",
    )
    onnx_only = parser.add_argument_group("ONNX Runtime int8 only")
    onnx_only.add_argument(
        "--calib-method",
        choices=CALIBRATION_METHODS,
        default=None,
        help=f"activation ranges (default {DEFAULT_CALIB_METHOD})",
    )
    onnx_only.add_argument(
        "--weight-dtype",
        choices=WEIGHT_DTYPES,
        default=None,
        help=f"weights: int7 = 7-bit values in int8, no u8×s8 saturation (default {DEFAULT_WEIGHT_DTYPE})",
    )
    int8.add_argument(
        "--keep-float", default=None, help="comma-separated modules left in float, e.g. stem,classifier"
    )
    qat = parser.add_argument_group("quantization-aware fine-tuning (--format exported-program --int8 only)")
    qat.add_argument(
        "--qat-epochs",
        type=int,
        default=None,
        help="fine-tune with int8 fake quantization for N epochs over the --calib images, distilling the "
        "float model (when post-training int8 loses too much)",
    )
    qat.add_argument(
        "--qat-lr",
        type=float,
        default=None,
        help=f"SGD learning rate of the fine-tune (default {DEFAULT_QAT_LR:g})",
    )
    parser.add_argument(
        "--verify-data", default=None, help="images to verify on (default: --calib, else the data)"
    )
    parser.add_argument("--verify-images", type=int, default=32, help="images to verify on (default 32)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="fp32 max abs difference")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def _trained(args: argparse.Namespace) -> Any:
    from ..models import create_model
    from ..weights.card import ModelCard, TrainedModel
    from ..weights.presets import get_preset

    if (args.model_name is None) == (args.weights is None):
        raise UsageError("give either a MODEL name or --checkpoint/--weights W (exactly one)")
    if args.weights is not None:
        return load_from_args(args)
    kwargs = foreign_model_kwargs(args)  # --width-mult, --padding
    model = create_model(args.model_name, **kwargs).eval()
    preset = get_preset(args.preset or "imagenet")
    card = ModelCard.for_weights(args.model_name, kwargs, preset, "untrained", model.num_classes)
    return TrainedModel(model=model, card=card)


def _verification_images(args: argparse.Namespace, card: Any) -> tuple[torch.Tensor, str]:
    from ..data.card import card_eval_set, first_images

    data = args.verify_data or args.calib or card.data
    if not data:
        generator = torch.Generator().manual_seed(0)
        size = card.img_size if args.resolution is None else args.resolution
        return torch.randn(
            args.verify_images, 3, size, size, generator=generator
        ), "random inputs (no data given)"
    dataset, _ = card_eval_set(card, data)
    return first_images(dataset, args.verify_images), f"{args.verify_images} images of {data}"


def _check_args(args: argparse.Namespace) -> None:
    if args.format not in INT8_FORMATS:
        given = [flag for name, flag in INT8_OPTIONS.items() if getattr(args, name) is not None]
        onnx = [flag for name, flag in ONNX_ONLY.items() if getattr(args, name) is not None]
        if given or onnx:
            hint = "; images to verify on go to --verify-data" if args.calib is not None else ""
            where = f"--format {' or '.join(INT8_FORMATS)} (int8)" if given else "--format onnx (int8)"
            raise UsageError(f"{', '.join(given + onnx)}: only for {where}, not --format {args.format}{hint}")
    if args.format != "onnx":
        given = [flag for name, flag in ONNX_ONLY.items() if getattr(args, name) is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)}: only for --format onnx (ONNX Runtime's quantizer); "
                f"--format {args.format} quantizes with torchao's PT2E flow"
            )
    qat = [flag for name, flag in QAT_OPTIONS.items() if getattr(args, name) is not None]
    if qat and args.format != "exported-program":
        raise UsageError(f"{', '.join(qat)}: only for --format exported-program --int8 (torchao PT2E)")
    without = [
        flag
        for name, flag in {**INT8_OPTIONS, **ONNX_ONLY, **QAT_OPTIONS}.items()
        if name not in ("int8", "calib") and getattr(args, name) is not None
    ]
    if without and not args.int8:
        raise UsageError(f"{', '.join(without)}: only with --int8")
    if args.qat_epochs is not None and args.qat_epochs < 1:
        raise UsageError(f"--qat-epochs must be >= 1, got {args.qat_epochs}")
    if args.qat_lr is not None and not (math.isfinite(args.qat_lr) and args.qat_lr > 0):
        raise UsageError(f"--qat-lr must be a positive number, got {args.qat_lr}")
    if args.int8 and not args.calib:
        raise UsageError("--int8 needs --calib DATA: real images to calibrate activation ranges on")
    for name in ("calib_images", "verify_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise UsageError(f"--tolerance must be a finite number >= 0, got {args.tolerance}")
    suffix = SUFFIXES[args.format]
    if args.out.suffix != suffix:
        raise UsageError(f"--out {str(args.out)!r} must end in {suffix} for --format {args.format}")


def _calibration(args: argparse.Namespace, card: ModelCard) -> torch.Tensor:
    """The first ``--calib-images`` images of ``--calib``."""
    from ..data.card import card_eval_set, first_images

    dataset, _ = card_eval_set(card, args.calib)
    return first_images(dataset, args.calib_images or DEFAULT_CALIB_IMAGES)


def _keep_float(args: argparse.Namespace) -> list[str]:
    """The ``--keep-float`` module names."""
    return [name.strip() for name in (args.keep_float or "").split(",") if name.strip()]


def _pt2e_int8(
    args: argparse.Namespace, model: nn.Module, card: ModelCard, resolution: int
) -> tuple[nn.Module, dict[str, Any]]:
    """The PT2E int8 model: calibrated on ``--calib``, or fine-tuned on it with ``--qat-epochs``."""
    from ..deploy.pt2e import quantize_pt2e
    from ..deploy.pt2e_qat import quantize_qat_pt2e

    images, keep_float = _calibration(args, card), _keep_float(args)
    extra: dict[str, Any] = {"int8": "pt2e", "calibration_images": len(images)}
    if args.qat_epochs is None:
        int8 = quantize_pt2e(model, images.split(50), resolution=resolution, keep_float=keep_float)
        return int8, extra
    lr = DEFAULT_QAT_LR if args.qat_lr is None else args.qat_lr
    int8 = quantize_qat_pt2e(
        model,
        images.split(QAT_BATCH),
        resolution=resolution,
        epochs=args.qat_epochs,
        lr=lr,
        keep_float=keep_float,
    )
    return int8, {**extra, "qat_epochs": args.qat_epochs, "qat_lr": lr}


def _int8_agreement(model: nn.Module, int8: nn.Module, batches: list[torch.Tensor]) -> dict[str, float]:
    """How an int8 model's logits compare with the float model's on the verification batches."""
    with torch.inference_mode():
        reference = torch.cat([model(b) for b in batches])
        quantized = torch.cat([int8(b) for b in batches])
    return {
        "int8_top1_agreement": (reference.argmax(1) == quantized.argmax(1)).float().mean().item(),
        "int8_max_abs_diff": (reference - quantized).abs().max().item(),
    }


def _torch_batches(images: torch.Tensor, *, fixed_batch: bool) -> list[torch.Tensor]:
    """Single images for a fixed batch of 1, else batches of 1 and of the rest (two batch sizes)."""
    if fixed_batch:
        return [images[i : i + 1] for i in range(len(images))]
    return [images[:1], images[1:]] if len(images) > 1 else [images]


def _run_torch(args: argparse.Namespace, model: nn.Module, card: ModelCard, resolution: int) -> int:
    """Export to TorchScript or torch.export (fp32 or PT2E int8), reload the file and check it."""
    from ..deploy import export_program, export_torchscript, max_abs_difference
    from ..deploy.torch_export import load_for_inference

    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if args.format == "torchscript":
        path = export_torchscript(model, args.out, resolution=resolution, card=card)
    elif args.int8:
        int8, extra = _pt2e_int8(args, model, card, resolution)
        path = export_program(
            int8, args.out, resolution=resolution, card=card, dynamic_batch=args.dynamic_batch
        )
    else:
        path = export_program(
            model, args.out, resolution=resolution, card=card, dynamic_batch=args.dynamic_batch
        )
    export_seconds = time.perf_counter() - started
    loaded, metadata = load_for_inference(path)  # int8: compiled to its int8 kernels, as deployed
    images, described = _verification_images(args, card)
    batches = _torch_batches(images, fixed_batch=not metadata["dynamic_batch"])
    loader = "torch.jit.load" if args.format == "torchscript" else "torch.export.load"
    result: dict[str, Any] = {
        "model": card.model,
        "format": args.format,
        "path": str(path),
        "bytes": path.stat().st_size,
        "dynamic_batch": metadata["dynamic_batch"],
        "verified_on": described,
        "verified_batch_sizes": sorted({len(b) for b in batches}),
        "export_seconds": round(export_seconds, 3),
        **extra,
    }
    sizes = " and ".join(str(size) for size in result["verified_batch_sizes"])
    if args.int8:
        result.update(_int8_agreement(model, loaded, batches))
        message = (
            f"{path}: int8 (PT2E) exported program, {result['bytes'] / 1e6:.1f} MB, {loader} + "
            f"compile_int8: top-1 agrees with PyTorch on {100 * result['int8_top1_agreement']:.1f}% of "
            f"{described}, batch sizes {sizes}"
        )
    else:
        diff = max_abs_difference(model, loaded, batches)
        result.update(max_abs_diff=diff, tolerance=args.tolerance)
        if diff > args.tolerance:
            raise ExternalError(
                f"{loader} output differs from PyTorch by {diff:.3g} (> {args.tolerance:g}) on "
                f"{described}; the exported file {path} is not trustworthy. Try --format onnx, or "
                "report the model and options"
            )
        message = (
            f"{path}: {args.format}, {result['bytes'] / 1e6:.1f} MB, {loader} vs PyTorch max |Δ| "
            f"{diff:.2e} on {described}, batch sizes {sizes} (tolerance {args.tolerance:g})"
        )
    print(json.dumps(result) if args.json else message)
    return 0


def run(args: argparse.Namespace) -> int:
    from ..deploy import OnnxClassifier, export_onnx, max_abs_difference, quantize_onnx

    _check_args(args)
    trained = _trained(args)
    card, model = trained.card, trained.model.eval()
    resolution = check_resolution(card.img_size if args.resolution is None else args.resolution)
    # The file's card (and the images it is checked on) use the exported size, not the weights' own.
    card = dataclasses.replace(card, img_size=resolution)
    if args.format != "onnx":
        return _run_torch(args, model, card, resolution)
    fp32_path = args.out.with_suffix(".fp32.onnx") if args.int8 else args.out
    export_onnx(model, fp32_path, resolution=resolution, card=card, dynamic_batch=args.dynamic_batch)
    images, described = _verification_images(args, card)
    batches = [images[i : i + 1] for i in range(len(images))] if not args.dynamic_batch else [images]
    fp32_diff = max_abs_difference(model, OnnxClassifier(fp32_path), batches)
    result: dict[str, Any] = {
        "model": card.model,
        "format": "onnx",
        "fp32_onnx": str(fp32_path),
        "fp32_bytes": fp32_path.stat().st_size,
        "verified_on": described,
        "fp32_max_abs_diff": fp32_diff,
        "tolerance": args.tolerance,
    }
    if fp32_diff > args.tolerance:
        raise ExternalError(
            f"ONNX Runtime output differs from PyTorch by {fp32_diff:.3g} (> {args.tolerance:g}) on "
            f"{described}; the exported file {fp32_path} is not trustworthy. Try another onnxruntime "
            "version, or --format torchscript"
        )
    if args.int8:
        calibration, keep_float = _calibration(args, card), _keep_float(args)
        quantize_onnx(
            fp32_path,
            args.out,
            calibration,
            method=args.calib_method or DEFAULT_CALIB_METHOD,
            exclude=keep_float,
            weight_dtype=args.weight_dtype or DEFAULT_WEIGHT_DTYPE,
        )
        result.update(
            int8_onnx=str(args.out),
            int8_bytes=args.out.stat().st_size,
            calibration_images=len(calibration),
            **_int8_agreement(model, OnnxClassifier(args.out), batches),
        )
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{fp32_path}: fp32, {result['fp32_bytes'] / 1e6:.1f} MB, ONNX Runtime vs PyTorch max |Δ| "
            f"{fp32_diff:.2e} on {described} (tolerance {args.tolerance:g})"
        )
        if args.int8:
            print(
                f"{args.out}: int8, {result['int8_bytes'] / 1e6:.1f} MB, top-1 agrees with PyTorch on "
                f"{100 * result['int8_top1_agreement']:.1f}% of the verification images",
                file=sys.stdout,
            )
    return 0
