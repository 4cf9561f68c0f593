"""The values :func:`~.verified_export.export_verified` takes, checked before anything is exported.

Each check names the bad value as the caller knows it: a Python caller by its parameter, the command
line by its flag (``names`` maps one to the other), so both get the same check with their own words.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

from ..atomic import unwritable_reason
from ..errors import UsageError
from .pt2e_qat import check_qat_values
from .quantize import check_quantize_values

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
) -> None:
    """A :class:`UsageError` for the first value an export cannot take; ``names`` renames parameters.

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
    unwritable = unwritable_reason(out)
    if unwritable is not None:
        raise UsageError(f"{name('out')} {str(out)!r}: {unwritable}")
    check_tolerance(tolerance, name=name("tolerance"))
    check_quantize_values(method=calib_method, weight_dtype=weight_dtype)
    check_qat_values(epochs=qat_epochs, lr=qat_lr, epochs_name=name("qat_epochs"), lr_name=name("qat_lr"))
