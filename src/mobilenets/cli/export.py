"""``mobilenets export``: a model or weights file → a checked ONNX file (fp32, or int8 calibrated).

Before it declares success, the command runs the file in ONNX Runtime on real images (the calibration
or verification data, else the checkpoint's own data) and compares with PyTorch: fp32 must agree to
``--tolerance`` (default 1e-4, max abs difference of the logits), int8 reports its top-1 agreement.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from ..deploy.quantize import CALIBRATION_METHODS, WEIGHT_DTYPES
from .common import add_weights_arguments, check_resolution, load_from_args

DEFAULT_TOLERANCE = 1e-4


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("export", help="export to ONNX (fp32 or int8), verified in ONNX Runtime")
    parser.add_argument(
        "model_name", nargs="?", default=None, metavar="MODEL", help="a model name, untrained"
    )
    add_weights_arguments(parser, required=False)
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="output format (default onnx)")
    parser.add_argument("--out", required=True, type=Path, help="output file (the int8 model with --int8)")
    parser.add_argument("--resolution", type=int, default=None, help="input size (default: the weights')")
    parser.add_argument("--dynamic-batch", action="store_true", help="leave the batch dimension free")
    parser.add_argument("--int8", action="store_true", help="quantize (the fp32 file goes to OUT.fp32.onnx)")
    parser.add_argument("--calib", default=None, help="calibration images: a folder or labelled list file")
    parser.add_argument(
        "--calib-images", type=int, default=300, help="first N images calibrate (default 300)"
    )
    parser.add_argument(
        "--calib-method", choices=CALIBRATION_METHODS, default="percentile", help="activation ranges"
    )
    parser.add_argument(
        "--weight-dtype",
        choices=WEIGHT_DTYPES,
        default="uint8",
        help="int8 weight type (see docs; default uint8)",
    )
    parser.add_argument(
        "--keep-float", default="", help="comma-separated modules left in float, e.g. stem,classifier"
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
        raise ValueError("give either a MODEL name or --checkpoint/--weights W (exactly one)")
    if args.weights is not None:
        return load_from_args(args)
    model = create_model(args.model_name).eval()
    card = ModelCard.for_weights(args.model_name, {}, get_preset("imagenet"), "untrained", model.num_classes)
    return TrainedModel(model=model, card=card)


def _verification_images(args: argparse.Namespace, card: Any) -> tuple[torch.Tensor, str]:
    from ..training.card_data import card_eval_set, first_images

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
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib DATA: real images to calibrate activation ranges on")
    for name in ("calib_images", "verify_images"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.out.suffix != ".onnx":
        raise ValueError(f"--out {str(args.out)!r} must end in .onnx")


def run(args: argparse.Namespace) -> int:
    from ..deploy import OnnxClassifier, export_onnx, max_abs_difference, quantize_onnx
    from ..training.card_data import card_eval_set, first_images

    _check_args(args)
    trained = _trained(args)
    card, model = trained.card, trained.model.eval()
    resolution = check_resolution(card.img_size if args.resolution is None else args.resolution)
    fp32_path = args.out.with_suffix(".fp32.onnx") if args.int8 else args.out
    export_onnx(model, fp32_path, resolution=resolution, card=card, dynamic_batch=args.dynamic_batch)
    images, described = _verification_images(args, card)
    batches = [images[i : i + 1] for i in range(len(images))] if not args.dynamic_batch else [images]
    fp32_diff = max_abs_difference(model, OnnxClassifier(fp32_path), batches)
    result: dict[str, Any] = {
        "model": card.model,
        "fp32_onnx": str(fp32_path),
        "fp32_bytes": fp32_path.stat().st_size,
        "verified_on": described,
        "fp32_max_abs_diff": fp32_diff,
        "tolerance": args.tolerance,
    }
    if fp32_diff > args.tolerance:
        raise ValueError(
            f"ONNX Runtime output differs from PyTorch by {fp32_diff:.3g} (> {args.tolerance:g}) on "
            f"{described}; the exported file {fp32_path} is not trustworthy"
        )
    if args.int8:
        dataset, _ = card_eval_set(card, args.calib)
        calibration = first_images(dataset, args.calib_images)
        keep_float = [name.strip() for name in args.keep_float.split(",") if name.strip()]
        quantize_onnx(
            fp32_path,
            args.out,
            calibration,
            method=args.calib_method,
            exclude=keep_float,
            weight_dtype=args.weight_dtype,
        )
        int8 = OnnxClassifier(args.out)
        with torch.inference_mode():
            reference = torch.cat([model(b) for b in batches])
            quantized = torch.cat([int8(b) for b in batches])
        result.update(
            int8_onnx=str(args.out),
            int8_bytes=args.out.stat().st_size,
            calibration_images=len(calibration),
            int8_top1_agreement=(reference.argmax(1) == quantized.argmax(1)).float().mean().item(),
            int8_max_abs_diff=(reference - quantized).abs().max().item(),
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
