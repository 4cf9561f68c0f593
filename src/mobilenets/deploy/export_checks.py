"""The values :func:`~.verified_export.export_verified` takes, checked before anything is exported.

Each check names the bad value as the caller knows it: a Python caller by its parameter, the command
line by its flag (``names`` maps one to the other), so both get the same check with their own words.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..atomic import unwritable_reason
from ..errors import UsageError
from .pt2e_qat import check_qat_values
from .quantize import check_quantize_values
from .staging import files_written

FORMATS = ("onnx", "torchscript", "exported-program", "executorch", "openvino")
SUFFIXES = {
    "onnx": ".onnx",
    "torchscript": ".pt",
    "exported-program": ".pt2",
    "executorch": ".pte",
    "openvino": ".xml",
}
INT8_FORMATS = ("onnx", "exported-program", "executorch", "openvino")


def check_tolerance(value: float, *, name: str = "tolerance") -> float:
    """``value`` if it is a finite number >= 0 (a largest absolute difference of logits)."""
    if not isinstance(value, float | int) or not math.isfinite(value) or value < 0:
        raise UsageError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


def check_export_values(
    *,
    format: str,
    out: str | os.PathLike[str],
    tolerance: float,
    calib_method: str | None = None,
    weight_dtype: str | None = None,
    qat_epochs: int | None = None,
    qat_lr: float | None = None,
    names: Mapping[str, str] | None = None,
    int8: bool = False,
) -> None:
    """A :class:`UsageError` for the first value an export cannot take; ``names`` renames parameters.
    ``int8``: whether the export is int8 (an ONNX one then also writes its fp32 file beside ``out``).

    ``names`` maps a parameter (``"format"``, ``"out"``, ``"tolerance"``, ``"calib_method"``,
    ``"weight_dtype"``, ``"qat_epochs"``, ``"qat_lr"``) to the word the message uses for it, e.g.
    ``{"qat_epochs": "--qat-epochs"}`` on the command line. ``None`` values are not given, not checked.
    """

    def name(parameter: str) -> str:
        return (names or {}).get(parameter, parameter)

    if format not in FORMATS:
        raise UsageError(f"{name('format')} {format!r} is not an export format; expected one of {FORMATS}")
    suffix = SUFFIXES[format]
    if Path(out).suffix != suffix:
        raise UsageError(f"{name('out')} {str(out)!r} must end in {suffix} for {name('format')} {format}")
    if Path(out).is_dir():  # found now, not by the final rename after the whole export
        raise UsageError(f"{name('out')} {str(out)!r} is a folder; give a file name ending in {suffix}")
    companions = files_written(Path(out), format)[:-1] if format != "onnx" or int8 else []
    for companion in companions:
        if companion.is_dir():
            raise UsageError(
                f"{name('out')} {str(out)!r}: the export also writes {str(companion)!r} beside it, "
                "which is a folder; move it or give another name"
            )
    unwritable = unwritable_reason(out)
    if unwritable is not None:
        raise UsageError(f"{name('out')} {str(out)!r}: {unwritable}")
    check_tolerance(tolerance, name=name("tolerance"))
    check_quantize_values(method=calib_method, weight_dtype=weight_dtype)
    check_qat_values(epochs=qat_epochs, lr=qat_lr, epochs_name=name("qat_epochs"), lr_name=name("qat_lr"))


def check_combination(
    *,
    format: str,
    int8: bool,
    calibration: torch.Tensor | None,
    calib_method: str | None,
    weight_dtype: str | None,
    keep_float: Sequence[str],
    qat_epochs: int | None,
    qat_lr: float | None,
    portable: bool = False,
    kernels: str = "default",
    uint8_input: bool = False,
) -> None:
    """Options that only mean something together with others."""
    if portable and (format != "executorch" or int8):
        raise UsageError(
            "portable: only for format 'executorch' in fp32 (an int8 program runs on XNNPACK's kernels)"
        )
    if kernels != "default" and format != "openvino":
        raise UsageError(f"kernels={kernels!r}: only for format 'openvino' (OpenVINO's CPU kernels)")
    if uint8_input and (format != "openvino" or not int8):
        raise UsageError("uint8_input: only for format 'openvino' with int8=True (an int8 IR's input)")
    if int8 and format not in INT8_FORMATS:
        formats = f"{', '.join(INT8_FORMATS[:-1])} or {INT8_FORMATS[-1]}"
        raise UsageError(f"int8: format {format!r} has no int8 export; use {formats}")
    if int8 and calibration is None:
        raise UsageError("int8 needs calibration images: real images to calibrate activation ranges on")
    int8_only = {
        "calibration": calibration is not None,
        "calib_method": calib_method is not None,
        "weight_dtype": weight_dtype is not None,
        "keep_float": bool(keep_float),
        "qat_epochs": qat_epochs is not None,
        "qat_lr": qat_lr is not None,
    }
    given = [name for name, present in int8_only.items() if present]
    if given and not int8:
        raise UsageError(f"{', '.join(given)}: only with int8=True")
    onnx_only = [name for name in ("calib_method", "weight_dtype") if int8_only[name]]
    if onnx_only and format != "onnx":
        raise UsageError(f"{', '.join(onnx_only)}: only for format 'onnx' (ONNX Runtime's quantizer)")
    qat = [name for name in ("qat_epochs", "qat_lr") if int8_only[name]]
    if qat and format != "exported-program":
        raise UsageError(f"{', '.join(qat)}: only for format 'exported-program' (torchao PT2E)")
