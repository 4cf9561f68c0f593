"""``mobilenets export``: a model or weights file → a checked ONNX (fp32, or int8 calibrated),
TorchScript (``.pt``), torch.export (``.pt2``, fp32 or PT2E int8, calibrated or quantization-aware
fine-tuned), ExecuTorch (``.pte``, XNNPACK, fp32 or int8) or OpenVINO IR (``.xml``, fp32 or NNCF
int8) file.

The work is :func:`mobilenets.deploy.export_verified`'s: it reloads the file (ONNX Runtime,
``torch.jit.load``, ``torch.export.load``, ExecuTorch's runtime or OpenVINO), runs it on the
verification images and compares with
PyTorch: fp32 must agree to ``--tolerance`` (default 1e-4, max abs difference of the logits), int8
reports its top-1 agreement. This command maps flags to its options, loads the weights and the images
(``--verify-data``, else ``--calib``, else the checkpoint's own data, else seeded random inputs) and
prints the report.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import torch

from ..deploy.export_checks import FORMATS, INT8_FORMATS, check_export_values
from ..deploy.openvino_kernels import KERNEL_CHOICES
from ..deploy.pt2e_qat import DEFAULT_LR as DEFAULT_QAT_LR
from ..deploy.quantize import CALIBRATION_METHODS, WEIGHT_DTYPES, default_weight_dtype
from ..deploy.verified_export import (
    DEFAULT_CALIB_METHOD,
    DEFAULT_TOLERANCE,
    DEFAULT_VERIFY_IMAGES,
    RUNTIMES,
)
from ..errors import ExternalError, UsageError
from .common import (
    add_memory_efficient_arguments,
    add_weights_arguments,
    check_resolution,
    foreign_classes,
    foreign_model_kwargs,
    foreign_sizes,
    load_from_args,
    memory_efficient_options,
    path_argument,
    refuse_file_options_with_a_name,
    refuse_overwriting,
)

if TYPE_CHECKING:
    from ..deploy.export_report import ExportReport
    from ..weights.card import ModelCard

# int8 options: None (unset) unless given, so formats without them can refuse them. ONNX quantizes in
# ONNX Runtime; the others with quantizers that have no method or weight choice.
INT8_OPTIONS = {
    "int8": "--int8",
    "calib": "--calib",
    "calib_images": "--calib-images",
    "keep_float": "--keep-float",
}
ONNX_ONLY = {"calib_method": "--calib-method", "weight_dtype": "--weight-dtype"}
QAT_OPTIONS = {"qat_epochs": "--qat-epochs", "qat_lr": "--qat-lr"}  # PT2E (exported-program) int8 only
# The library's parameter names, as the flags that set them (its value checks name these).
FLAGS = {
    "format": "--format",
    "out": "--out",
    "tolerance": "--tolerance",
    **ONNX_ONLY,
    **QAT_OPTIONS,
}
DEFAULT_CALIB_IMAGES = 300
QUANTIZERS = {
    "onnx": "ONNX Runtime's quantizer",
    "exported-program": "torchao's PT2E flow (x86 quantizer)",
    "executorch": "XNNPACK's quantizer (torchao PT2E)",
    "openvino": "NNCF",
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "export",
        help="export to ONNX, TorchScript, torch.export, ExecuTorch or OpenVINO (fp32 or int8), verified on "
        "reload",
    )
    parser.add_argument(
        "model_name", nargs="?", default=None, metavar="MODEL", help="a model name, untrained"
    )
    add_weights_arguments(parser, required=False)
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="onnx",
        help="onnx (.onnx), torchscript (traced, frozen: .pt), exported-program (torch.export: .pt2), "
        "executorch (XNNPACK: .pte) or openvino (IR: .xml + .bin); default onnx",
    )
    parser.add_argument(
        "--out", required=True, type=path_argument, help="output file (the int8 model with --int8)"
    )
    parser.add_argument("--resolution", type=int, default=None, help="input size (default: the weights')")
    parser.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="leave the batch dimension free (otherwise 1; TorchScript takes any batch either way; "
        "ExecuTorch 1 to 8)",
    )
    int8 = parser.add_argument_group(
        "int8 quantization (onnx: ONNX Runtime; exported-program: torchao PT2E; executorch: XNNPACK; "
        "openvino: NNCF)"
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
        help="N images calibrate: a list file's first, a folder's spread over it "
        f"(default {DEFAULT_CALIB_IMAGES})",
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
        help="weights: int7 = 7-bit values in int8, no u8×s8 saturation on CPUs without VNNI (default: int8 "
        f"on a CPU with VNNI, int7 without; this one: {default_weight_dtype()})",
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
    memory = parser.add_argument_group("memory-efficient program (--format executorch, fp32)")
    add_memory_efficient_arguments(memory, "export the model whose")
    memory.add_argument(
        "--portable",
        action="store_true",
        default=None,
        help="lower to ExecuTorch's portable kernels instead of XNNPACK: every activation lives in the "
        "planned arena the report states (where --memory-efficient's saving shows)",
    )
    parser.add_argument(
        "--kernels",
        choices=KERNEL_CHOICES,
        default=None,
        help="--format openvino: the convolution kernels the IR asks OpenVINO for: default (its own "
        "order), jit (its direct kernels first) or tune (jit only if timed faster on this machine)",
    )
    parser.add_argument(
        "--uint8-input",
        action="store_true",
        default=None,
        help="--format openvino --int8: the IR takes its input quantized, uint8 NHWC (apps map pixels "
        "through a table per channel), which skips the input's quantize and reorder",
    )
    parser.add_argument(
        "--verify-data", default=None, help="images to verify on (default: --calib, else the data)"
    )
    parser.add_argument(
        "--verify-images",
        type=int,
        default=DEFAULT_VERIFY_IMAGES,
        help=f"images to verify on (default {DEFAULT_VERIFY_IMAGES})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"largest |Δ logits| of the fp32 file against PyTorch (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def _trained(args: argparse.Namespace) -> Any:
    from ..models import create_model
    from ..weights.card import ModelCard, TrainedModel
    from ..weights.presets import get_preset, with_sizes

    weighted = args.weights is not None or args.pretrained is not None
    if (args.model_name is not None) == weighted:
        raise UsageError("give either a MODEL name or --weights W or --pretrained [NAME] (exactly one)")
    if weighted:
        return load_from_args(args)
    refuse_file_options_with_a_name(args)
    kwargs = foreign_model_kwargs(args)  # --width-mult, --padding
    model = create_model(args.model_name, **kwargs).eval()  # type: ignore[arg-type]
    preset = with_sizes(get_preset(args.preset or "imagenet"), **foreign_sizes(args))
    card = ModelCard.for_weights(
        args.model_name, kwargs, preset, "untrained", model.num_classes, foreign_classes(args)
    )
    return TrainedModel(model=model, card=card)


def _check_args(args: argparse.Namespace) -> None:
    """Flags that only mean something with others, then the values (the library's checks)."""
    if args.format not in INT8_FORMATS:
        given = [flag for name, flag in INT8_OPTIONS.items() if getattr(args, name) is not None]
        onnx = [flag for name, flag in ONNX_ONLY.items() if getattr(args, name) is not None]
        if given or onnx:
            hint = "; images to verify on go to --verify-data" if args.calib is not None else ""
            formats = f"{', '.join(INT8_FORMATS[:-1])} or {INT8_FORMATS[-1]}"
            where = f"--format {formats} (int8)" if given else "--format onnx (int8)"
            raise UsageError(f"{', '.join(given + onnx)}: only for {where}, not --format {args.format}{hint}")
    if args.format != "onnx":
        given = [flag for name, flag in ONNX_ONLY.items() if getattr(args, name) is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)}: only for --format onnx (ONNX Runtime's quantizer); "
                f"--format {args.format} quantizes with {QUANTIZERS[args.format]}"
            )
    memory = [flag for flag, given in (("--memory-efficient", args.memory_efficient is not None),
                                      ("--portable", bool(args.portable))) if given]  # fmt: skip
    if memory and (args.format != "executorch" or args.int8):
        raise UsageError(f"{', '.join(memory)}: only for --format executorch in fp32 (not --int8)")
    if args.kernels is not None and args.format != "openvino":
        raise UsageError(f"--kernels: only for --format openvino, not --format {args.format}")
    if args.uint8_input and (args.format != "openvino" or not args.int8):
        raise UsageError(
            f"--uint8-input: only for --format openvino --int8 (an int8 IR's quantized input), not "
            f"--format {args.format}{' --int8' if args.int8 else ''}"
        )
    qat = [flag for name, flag in QAT_OPTIONS.items() if getattr(args, name) is not None]
    if qat and args.format != "exported-program":
        raise UsageError(f"{', '.join(qat)}: only for --format exported-program --int8 (torchao PT2E)")
    without = [
        flag
        for name, flag in {**INT8_OPTIONS, **ONNX_ONLY, **QAT_OPTIONS}.items()
        if name != "int8" and getattr(args, name) is not None
    ]
    if without and not args.int8:  # --calib alone would give an fp32 file without a word
        hint = "; images to verify on go to --verify-data" if args.calib is not None else ""
        raise UsageError(f"{', '.join(without)}: only with --int8{hint}")
    for flag, value in (("--calib", args.calib), ("--verify-data", args.verify_data)):
        if value is not None and not value.strip():  # else it would fall back to other data unseen
            raise UsageError(f"{flag} is empty; give a dataset name, an image folder or a labelled list file")
    if args.int8 and not args.calib:
        raise UsageError("--int8 needs --calib DATA: real images to calibrate activation ranges on")
    if args.tolerance is not None and args.int8 and args.format != "onnx":
        raise UsageError(
            f"--tolerance bounds an fp32 file's difference from PyTorch; --format {args.format} --int8 "
            "writes no fp32 file (its int8 file is reported by its top-1 agreement)"
        )
    for name in ("calib_images", "verify_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    refuse_overwriting(args.out, "--out", args.weights)
    check_export_values(
        format=args.format,
        out=args.out,
        tolerance=_tolerance(args),
        calib_method=args.calib_method,
        weight_dtype=args.weight_dtype,
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
        names=FLAGS,
        int8=args.int8,
    )


def _tolerance(args: argparse.Namespace) -> float:
    return DEFAULT_TOLERANCE if args.tolerance is None else float(args.tolerance)


def _verification_images(args: argparse.Namespace, card: ModelCard) -> tuple[torch.Tensor, str]:
    """The first ``--verify-images`` of ``--verify-data``, else ``--calib``, else the card's data.

    With none of them (an untrained model, weights from elsewhere), seeded random inputs.
    """
    from ..data import card_eval_set, first_images
    from ..deploy.verified_export import random_inputs

    data = args.verify_data or args.calib or card.data
    if not data:
        return random_inputs(args.verify_images, card.img_size), "random inputs (no data given)"
    dataset, _ = card_eval_set(card, data, scored=False)  # compared with PyTorch, not with labels
    images = first_images(dataset, args.verify_images)
    return images, f"{len(images)} images of {data}"


def _calibration(args: argparse.Namespace, card: ModelCard) -> torch.Tensor | None:
    """``--calib-images`` images of ``--calib`` (with ``--int8``): see :func:`calibration_images`."""
    from ..data.card import calibration_images

    if not args.int8:
        return None
    return calibration_images(card, args.calib, args.calib_images or DEFAULT_CALIB_IMAGES)


def _keep_float(args: argparse.Namespace) -> list[str]:
    """The ``--keep-float`` module names."""
    return [name.strip() for name in (args.keep_float or "").split(",") if name.strip()]


def _message(report: ExportReport) -> str:
    """The human-readable report: one line per file written."""
    portable = report.kernels == "portable"
    runtime = "ExecuTorch (portable kernels)" if portable else RUNTIMES[report.format]
    *most, last = [str(size) for size in report.verified_batch_sizes] or ["none"]
    sizes = f"{', '.join(most)} and {last}" if most else last
    if report.format == "onnx":
        lines = [
            f"{report.fp32_path}: fp32, {(report.fp32_bytes or 0) / 1e6:.1f} MB, {runtime} vs PyTorch max "
            f"|Δ| {report.max_abs_diff:.2e} on {report.verified_on} (tolerance {report.tolerance:g})"
        ]
        if report.int8 is not None:
            lines.append(
                f"{report.path}: int8, {report.bytes / 1e6:.1f} MB, calibrated on "
                f"{report.calibration_images} images, top-1 agrees with PyTorch on "
                f"{100 * (report.int8_top1_agreement or 0):.1f}% of the verification images"
            )
        return "\n".join(lines)
    arena = "" if report.arena_bytes is None else f", planned arena {report.arena_bytes / 1e6:.1f} MB"
    if report.format == "openvino" and report.kernels == "jit":
        ratio = report.kernel_ratio
        timed = "" if ratio is None else f", timed at {ratio:.2f}× OpenVINO's order"
        arena += f", direct convolution kernels preferred{timed}"
    elif report.kernel_ratio is not None:
        arena += f", OpenVINO's kernel order kept (the direct kernels timed {report.kernel_ratio:.2f}×)"
    if report.uint8_input is not None:
        quantization = report.uint8_input
        arena += (
            f", input uint8 NHWC (value = (q - {quantization['zero_point']}) × {quantization['scale']:.6g})"
        )
    if report.int8 is not None:
        compiled = " + compile_int8" if report.format == "exported-program" else ""
        return (
            f"{report.path}: int8 ({QUANTIZERS[report.format]}) {report.format}, {report.bytes / 1e6:.1f} MB"
            f"{arena}, {runtime}{compiled}, calibrated on {report.calibration_images} images: top-1 agrees "
            f"with PyTorch on {100 * (report.int8_top1_agreement or 0):.1f}% of {report.verified_on}, batch "
            f"sizes {sizes}"
        )
    return (
        f"{report.path}: {report.format}, {report.bytes / 1e6:.1f} MB{arena}, {runtime} vs PyTorch max |Δ| "
        f"{report.max_abs_diff:.2e} on {report.verified_on}, batch sizes {sizes} "
        f"(tolerance {report.tolerance:g})"
    )


def run(args: argparse.Namespace) -> int:
    from ..deploy import export_verified

    _check_args(args)
    trained = _trained(args)
    card, model = trained.card, trained.model
    resolution = check_resolution(card.img_size if args.resolution is None else args.resolution)
    # Images are prepared at the exported size, which the file's card will say too.
    card = card.at_resolution(resolution)
    verify, described = _verification_images(args, card)
    lean = memory_efficient_options(args)
    if lean is not None:
        from ..deploy.memory_efficient import memory_efficient
        from ..deploy.onnx_export import max_abs_difference

        chunks, patches, stride = lean
        plain = model
        model = memory_efficient(model, chunks, patches=patches, patch_stride=stride, resolution=resolution)
        # The file is verified against the model it was exported from: this one, so check it first
        # against the network the checkpoint holds.
        diff = max_abs_difference(plain, model, verify.split(8))
        if not diff <= _tolerance(args):
            raise ExternalError(
                f"the memory-efficient model's logits differ from the plain model's by {diff:.3g} on the "
                f"verification images (tolerance {_tolerance(args):g}); nothing was exported"
            )
    report = export_verified(
        model,
        args.out,
        format=args.format,
        resolution=resolution,
        card=card,
        dynamic_batch=args.dynamic_batch,
        verify_images=verify,
        verified_on=described,
        tolerance=_tolerance(args),
        int8=bool(args.int8),
        calibration=_calibration(args, card),
        calib_method=args.calib_method,
        weight_dtype=args.weight_dtype,
        keep_float=_keep_float(args),
        qat_epochs=args.qat_epochs,
        qat_lr=args.qat_lr,
        portable=bool(args.portable),
        kernels=args.kernels or "default",
        uint8_input=bool(args.uint8_input),
    )
    print(json.dumps(report.to_dict()) if args.json else _message(report))
    return 0
