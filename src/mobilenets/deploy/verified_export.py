"""Export a model and prove the file: reload it as a deployment would and compare it with PyTorch.

:func:`export_verified` writes an ONNX file (fp32, or int8 calibrated in ONNX Runtime), a TorchScript
file or a torch.export program (fp32, or int8 through torchao's PT2E flow, calibrated or fine-tuned),
then loads it back (ONNX Runtime; ``torch.jit.load``; ``torch.export.load``, int8 compiled to its
int8 kernels) and runs it on the verification images next to the PyTorch model. An fp32 file must
agree to ``tolerance`` (the largest absolute difference of the logits), else
:class:`~mobilenets.errors.ExternalError`: a file that computes something else must not ship. An
int8 file cannot agree that closely; the report gives how often its top-1 class matches the float
model's. ``mobilenets export`` is this function behind command-line options.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ExternalError, UsageError, WrongTypeError
from ..weights.card import ModelCard
from .deployed import deployed_quantization
from .export_checks import check_combination, check_export_values
from .export_report import ExportReport
from .onnx_export import OnnxClassifier, export_onnx, max_abs_difference, read_metadata
from .openvino_kernels import check_kernels
from .pt2e import check_options
from .pt2e_qat import DEFAULT_LR as DEFAULT_QAT_LR
from .quantize import default_weight_dtype, quantize_onnx
from .staging import export_checked
from .torch_export import export_program, export_torchscript, load_for_inference

DEFAULT_TOLERANCE = 1e-4
DEFAULT_VERIFY_IMAGES = 32  # images verified on when none are given (calibration or random ones)
DEFAULT_CALIB_METHOD = "percentile"
PT2E_CALIBRATION_BATCH = 50
QAT_BATCH = 32
RUNTIMES = {
    "onnx": "ONNX Runtime",
    "torchscript": "torch.jit.load",
    "exported-program": "torch.export.load",
    "executorch": "ExecuTorch (XNNPACK)",
    "openvino": "OpenVINO (CPU, fp32)",
}
_FALLBACKS = {
    "onnx": "Try another onnxruntime version, or the torchscript format",
    "torchscript": "Try the onnx format, or report the model and options",
    "exported-program": "Try the onnx format, or report the model and options",
    "executorch": "Try the onnx format, or report the model and options",
    "openvino": "Try the onnx format, or report the model and options",
}


def random_inputs(count: int, resolution: int) -> torch.Tensor:
    """``count`` seeded random (3, resolution, resolution) inputs: the same on every run.

    For verifying a model that has no images at hand; real images verify what a deployment will see.
    """
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, 3, resolution, resolution, generator=generator)


def verification_batches(images: torch.Tensor, *, fixed_batch: bool) -> list[torch.Tensor]:
    """Single images for a file with a fixed batch (1), else a batch of 1 and one of the rest.

    Two batch sizes show that a free batch dimension really is free.
    """
    if fixed_batch:
        return [images[i : i + 1] for i in range(len(images))]
    return [images[:1], images[1:]] if len(images) > 1 else [images]


def int8_agreement(model: nn.Module, int8: nn.Module, batches: Sequence[torch.Tensor]) -> tuple[float, float]:
    """How an int8 model's logits compare with the float model's: (top-1 agreement, largest difference)."""
    with torch.inference_mode():
        reference = torch.cat([model(b) for b in batches])
        quantized = torch.cat([int8(b) for b in batches])
    agreement = (reference.argmax(1) == quantized.argmax(1)).float().mean().item()
    return agreement, (reference - quantized).abs().max().item()


def _images(images: object, resolution: int, name: str) -> torch.Tensor:
    """``images`` as float32 if it is a non-empty float (N, 3, resolution, resolution) batch."""
    if not isinstance(images, torch.Tensor):
        raise WrongTypeError(f"{name} must be a tensor of images, not a {type(images).__name__}")
    if images.ndim != 4 or tuple(images.shape[1:]) != (3, resolution, resolution) or not len(images):
        raise UsageError(
            f"{name} must be a non-empty (N, 3, {resolution}, {resolution}) batch at the export "
            f"resolution, got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise UsageError(f"{name} must hold float images prepared as the model expects, got {images.dtype}")
    return images.float()


def export_verified(
    model: nn.Module,
    out: str | os.PathLike[str],
    *,
    format: str = "onnx",
    resolution: int | None = None,
    card: ModelCard | None = None,
    dynamic_batch: bool = False,
    verify_images: torch.Tensor | None = None,
    verified_on: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    int8: bool = False,
    calibration: torch.Tensor | None = None,
    calib_method: str | None = None,
    weight_dtype: str | None = None,
    keep_float: Sequence[str] = (),
    qat_epochs: int | None = None,
    qat_lr: float | None = None,
    portable: bool = False,
    kernels: str = "default",
    uint8_input: bool = False,
) -> ExportReport:
    """Export ``model`` to ``out``, reload the file in its runtime and check it against PyTorch.

    ``format``: ``"onnx"`` (``.onnx``), ``"torchscript"`` (``.pt``) or ``"exported-program"``
    (``.pt2``). ``resolution`` defaults to the card's; the file's card says the exported size.
    ``dynamic_batch`` leaves the batch dimension free (otherwise 1; TorchScript takes any batch).

    ``verify_images``: float (N, 3, R, R) images prepared as the model expects (e.g.
    ``first_images(card_eval_set(card, data)[0], 32)``); ``verified_on`` describes them for the
    report. Without them, an int8 export verifies on its first 32 calibration images and an fp32
    export on 32 seeded random inputs. An fp32 file differing from PyTorch by more than ``tolerance``
    raises :class:`~mobilenets.errors.ExternalError`. Files are written as ``NAME.unverified.SUFFIX``
    and renamed to ``out`` once checked: one that fails stays under that name, for inspection, and a
    file already at ``out`` is left as it was.

    ``int8`` quantizes, calibrated on ``calibration`` (float images like ``verify_images``; a few
    hundred). ONNX quantizes in ONNX Runtime (``calib_method``: minmax, percentile or entropy, default
    percentile; ``weight_dtype``: int7, int8 or uint8, default int8 on CPUs with VNNI, else int7, see
    :mod:`~mobilenets.deploy.quantize`) and keeps the fp32 file as ``OUT.fp32.onnx``; an exported
    program goes through torchao's PT2E flow, fine-tuned for ``qat_epochs`` epochs at ``qat_lr``
    when given (see :mod:`~mobilenets.deploy.pt2e_qat`). ``keep_float`` names modules left in float.

    ``portable`` lowers an fp32 ExecuTorch program to the portable kernels instead of XNNPACK: every
    activation then lives in the memory planner's arena (``arena_bytes``), which is where the chunked
    and tiled models of :mod:`~mobilenets.deploy.memory_efficient` keep their saving.
    ``kernels`` (OpenVINO only): ``"default"``, ``"jit"`` or ``"tune"``, the convolution kernels the IR
    asks OpenVINO for (:func:`~mobilenets.deploy.openvino_export.export_openvino`); ``uint8_input``
    (OpenVINO int8) makes the IR take its input quantized, uint8 NHWC (the report's ``uint8_input``).
    ``model`` is put in eval mode and not otherwise changed.
    """
    check_export_values(
        format=format,
        out=out,
        tolerance=tolerance,
        calib_method=calib_method,
        weight_dtype=weight_dtype,
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
        int8=int8,
    )
    check_combination(
        format=format,
        int8=int8,
        calibration=calibration,
        calib_method=calib_method,
        weight_dtype=weight_dtype,
        keep_float=keep_float,
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
        portable=portable,
        kernels=check_kernels(kernels),
        uint8_input=uint8_input,
    )
    if resolution is None:
        if card is None:
            raise UsageError("give resolution (or a card to take it from): the input size to export at")
        resolution = card.img_size
    check_options(model, resolution, keep_float)  # the resolution's range, the keep_float modules
    if card is not None:  # the file's card (and the images it is checked on) use the exported size
        card = card.at_resolution(resolution)
    images = None if calibration is None else _images(calibration, resolution, "calibration")
    if verify_images is not None:
        verify = _images(verify_images, resolution, "verify_images")
        described = verified_on or f"{len(verify)} given images"
    elif images is not None:
        verify = images[:DEFAULT_VERIFY_IMAGES]
        described = verified_on or f"the first {len(verify)} calibration images"
    else:
        verify = random_inputs(DEFAULT_VERIFY_IMAGES, resolution)
        described = verified_on or "random inputs (no images given)"
    model.eval()
    base = ExportReport(
        model=card.model if card is not None else type(model).__name__,
        format=format,
        path=Path(out),
        bytes=0,
        dynamic_batch=dynamic_batch,
        verified_on=described,
        verified_batch_sizes=(),
        tolerance=float(tolerance),
        export_seconds=0.0,
    )
    settings = _Int8Settings(
        calibration=images,
        calib_method=calib_method,
        weight_dtype=weight_dtype,
        keep_float=list(keep_float),
        qat_epochs=qat_epochs,
        qat_lr=qat_lr,
    )

    def export(staged: Path) -> ExportReport:
        at = dataclasses.replace(base, path=staged)
        if format == "executorch":
            return _executorch(model, at, card, resolution, verify, settings, portable=portable)
        if format == "openvino":
            return _openvino(
                model, at, card, resolution, verify, settings, kernels=kernels, uint8_input=uint8_input
            )
        return (_onnx if format == "onnx" else _torch)(model, at, card, resolution, verify, settings)

    return export_checked(Path(out), format, export)


@dataclasses.dataclass(frozen=True)
class _Int8Settings:
    calibration: torch.Tensor | None  # None: fp32
    calib_method: str | None
    weight_dtype: str | None
    keep_float: list[str]
    qat_epochs: int | None
    qat_lr: float | None


def _check_fp32(report: ExportReport, diff: float, path: Path) -> None:
    """An :class:`ExternalError` when the reloaded fp32 file is further from PyTorch than the tolerance."""
    if diff > report.tolerance:
        raise ExternalError(
            f"{RUNTIMES[report.format]} output differs from PyTorch by {diff:.3g} (> {report.tolerance:g}) "
            f"on {report.verified_on}; the exported file {path} is not trustworthy. "
            f"{_FALLBACKS[report.format]}"
        )


def _onnx(
    model: nn.Module,
    base: ExportReport,
    card: ModelCard | None,
    resolution: int,
    verify: torch.Tensor,
    settings: _Int8Settings,
) -> ExportReport:
    """fp32 ONNX (``OUT.fp32.onnx`` beside an int8 ``OUT``), checked in ONNX Runtime; int8 after it."""
    out, calibration = base.path, settings.calibration
    fp32_path = out.with_suffix(".fp32.onnx") if calibration is not None else out
    started = time.perf_counter()
    export_onnx(model, fp32_path, resolution=resolution, card=card, dynamic_batch=base.dynamic_batch)
    export_seconds = time.perf_counter() - started
    runtime = OnnxClassifier(fp32_path)
    batches = verification_batches(verify, fixed_batch=runtime.fixed_batch is not None)
    diff = max_abs_difference(model, runtime, batches)
    _check_fp32(base, diff, fp32_path)
    fp32_bytes = fp32_path.stat().st_size
    report = dataclasses.replace(
        base,
        bytes=fp32_bytes,
        verified_batch_sizes=tuple(sorted({len(b) for b in batches})),
        export_seconds=round(export_seconds, 3),
        fp32_path=fp32_path,
        fp32_bytes=fp32_bytes,
        max_abs_diff=diff,
    )
    if calibration is None:
        return report
    started = time.perf_counter()
    quantize_onnx(
        fp32_path,
        out,
        calibration,
        method=settings.calib_method or DEFAULT_CALIB_METHOD,
        exclude=settings.keep_float,
        weight_dtype=settings.weight_dtype or default_weight_dtype(),
    )
    export_seconds += time.perf_counter() - started
    agreement, int8_diff = int8_agreement(model, OnnxClassifier(out), batches)
    return dataclasses.replace(
        report,
        bytes=out.stat().st_size,
        export_seconds=round(export_seconds, 3),
        int8="onnxruntime",
        quantization=read_metadata(out).get("quantization"),
        calibration_images=len(calibration),
        int8_top1_agreement=agreement,
        int8_max_abs_diff=int8_diff,
    )


def _pt2e(model: nn.Module, resolution: int, settings: _Int8Settings, calibration: torch.Tensor) -> nn.Module:
    """The PT2E int8 model: calibrated, or fine-tuned with int8 fake quantization for ``qat_epochs``."""
    from .pt2e import quantize_pt2e
    from .pt2e_qat import quantize_qat_pt2e

    if settings.qat_epochs is None:
        batches = list(calibration.split(PT2E_CALIBRATION_BATCH))
        return quantize_pt2e(model, batches, resolution=resolution, keep_float=settings.keep_float)
    return quantize_qat_pt2e(
        model,
        list(calibration.split(QAT_BATCH)),
        resolution=resolution,
        epochs=settings.qat_epochs,
        lr=DEFAULT_QAT_LR if settings.qat_lr is None else settings.qat_lr,
        keep_float=settings.keep_float,
    )


def _torch(
    model: nn.Module,
    base: ExportReport,
    card: ModelCard | None,
    resolution: int,
    verify: torch.Tensor,
    settings: _Int8Settings,
) -> ExportReport:
    """TorchScript or torch.export (fp32 or PT2E int8), reloaded as deployed and checked."""
    out, calibration = base.path, settings.calibration
    started = time.perf_counter()
    if base.format == "torchscript":
        export_torchscript(model, out, resolution=resolution, card=card)
    else:
        program = model if calibration is None else _pt2e(model, resolution, settings, calibration)
        export_program(program, out, resolution=resolution, card=card, dynamic_batch=base.dynamic_batch)
    export_seconds = time.perf_counter() - started
    loaded, metadata = load_for_inference(out)  # int8: compiled to its int8 kernels, as deployed
    batches = verification_batches(verify, fixed_batch=not metadata["dynamic_batch"])
    report = _checked(
        base, model, loaded, batches, calibration, "pt2e", seconds=export_seconds,
        dynamic_batch=bool(metadata["dynamic_batch"]),
    )  # fmt: skip
    if calibration is None or settings.qat_epochs is None:
        return report
    qat_lr = DEFAULT_QAT_LR if settings.qat_lr is None else settings.qat_lr
    return dataclasses.replace(report, qat_epochs=settings.qat_epochs, qat_lr=qat_lr)


def _checked(
    base: ExportReport,
    model: nn.Module,
    loaded: nn.Module,
    batches: list[torch.Tensor],
    calibration: torch.Tensor | None,
    quantizer: str,
    *,
    seconds: float,
    size: int | None = None,
    **fields: Any,
) -> ExportReport:
    """The report of the file at ``base.path``, reloaded as ``loaded``: an int8 file's agreement with
    ``model`` (``quantizer`` names it), or an fp32 file's largest difference, checked against the
    tolerance. ``size``: the bytes written (default the file's); ``fields``: further report fields."""
    report = dataclasses.replace(
        base,
        bytes=base.path.stat().st_size if size is None else size,
        verified_batch_sizes=tuple(sorted({len(b) for b in batches})),
        export_seconds=round(seconds, 3),
        **fields,
    )
    if calibration is not None:
        return _int8_report(report, quantizer, model, loaded, batches, len(calibration))
    diff = max_abs_difference(model, loaded, batches)
    _check_fp32(report, diff, report.path)
    return dataclasses.replace(report, fp32_path=report.path, fp32_bytes=report.bytes, max_abs_diff=diff)


def _int8_report(
    report: ExportReport,
    quantizer: str,
    model: nn.Module,
    loaded: nn.Module,
    batches: list[torch.Tensor],
    images: int,
) -> ExportReport:
    """``report`` with the int8 file's agreement with the float ``model`` on the verification batches."""
    agreement, int8_diff = int8_agreement(model, loaded, batches)
    return dataclasses.replace(
        report,
        int8=quantizer,
        quantization=deployed_quantization(report.path),
        calibration_images=images,
        int8_top1_agreement=agreement,
        int8_max_abs_diff=int8_diff,
    )


def _executorch(
    model: nn.Module,
    base: ExportReport,
    card: ModelCard | None,
    resolution: int,
    verify: torch.Tensor,
    settings: _Int8Settings,
    *,
    portable: bool = False,
) -> ExportReport:
    """An ExecuTorch program lowered to XNNPACK (fp32, or int8 by XNNPACK's quantizer), or in fp32 to the
    portable kernels, run by its runtime."""
    from .executorch_export import MAX_PTE_BATCH, ExecuTorchClassifier, export_executorch, quantize_xnnpack

    out, calibration = base.path, settings.calibration
    started = time.perf_counter()
    program: nn.Module = model
    if calibration is not None:
        batches = list(calibration.split(PT2E_CALIBRATION_BATCH))
        program = quantize_xnnpack(model, batches, resolution=resolution, keep_float=settings.keep_float)
    written = export_executorch(
        program,
        out,
        resolution=resolution,
        card=card,
        dynamic_batch=base.dynamic_batch,
        delegate=not portable,
    )
    export_seconds = time.perf_counter() - started
    loaded = ExecuTorchClassifier(out)
    batches = verification_batches(verify, fixed_batch=not base.dynamic_batch)
    # The file's own batch sizes: a bigger batch the classifier would split, so the file never ran it.
    batches = [piece for batch in batches for piece in batch.split(MAX_PTE_BATCH)]
    return _checked(
        base, model, loaded, batches, calibration, "xnnpack", seconds=export_seconds,
        size=written.bytes, arena_bytes=written.arena_bytes, kernels="portable" if portable else "xnnpack",
    )  # fmt: skip


def _openvino(
    model: nn.Module,
    base: ExportReport,
    card: ModelCard | None,
    resolution: int,
    verify: torch.Tensor,
    settings: _Int8Settings,
    *,
    kernels: str,
    uint8_input: bool,
) -> ExportReport:
    """OpenVINO IR (fp32, or int8 by NNCF), compiled by OpenVINO in fp32 and checked against PyTorch."""
    from .openvino_export import OpenVINOClassifier, export_openvino

    out, calibration = base.path, settings.calibration
    started = time.perf_counter()
    written = export_openvino(
        model,
        out,
        resolution=resolution,
        card=card,
        dynamic_batch=base.dynamic_batch,
        calibration=calibration,
        keep_float=settings.keep_float,
        kernels=kernels,
        uint8_input=uint8_input,
    )
    export_seconds = time.perf_counter() - started
    loaded = OpenVINOClassifier(out, precision="fp32")
    quantization = loaded.input_quantization
    batches = verification_batches(verify, fixed_batch=not base.dynamic_batch)
    return _checked(
        base, model, loaded, batches, calibration, "nncf", seconds=export_seconds, size=written.bytes,
        kernels=written.kernels, kernel_ratio=written.kernel_ratio,
        uint8_input=None if quantization is None else quantization.to_dict(),
    )  # fmt: skip
