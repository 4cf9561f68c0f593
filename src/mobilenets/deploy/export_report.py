"""What a verified export wrote, and how its reloaded file compared with PyTorch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keys an ONNX export's JSON carried before the report was shared by every format; scripts read them.
_ONNX_KEYS = {"fp32_path": "fp32_onnx", "fp32_bytes": "fp32_bytes", "max_abs_diff": "fp32_max_abs_diff"}


@dataclass(frozen=True)
class ExportReport:
    """The result of :func:`~mobilenets.deploy.export_verified`.

    ``path`` is the file asked for (the int8 one with int8). ``fp32_path`` is the fp32 file checked
    against ``tolerance``: ``path`` itself, or for ONNX int8 the ``.fp32.onnx`` file written beside it;
    None for an int8 file of another format, which has no fp32 file. ``max_abs_diff`` is that fp32
    file's largest absolute logit difference from PyTorch. ``int8`` names the quantizer
    (``"onnxruntime"``, ``"pt2e"``, ``"xnnpack"`` or ``"nncf"``); ``int8_top1_agreement`` is the share
    of verification images whose top-1 class the int8 file and the float model agree on.
    ``arena_bytes`` is an ExecuTorch program's planned activation memory, ``kernels`` what it runs on
    (``"xnnpack"``, or ``"portable"``: every operator in the planned arena); for an OpenVINO IR,
    ``kernels`` says whether its convolutions prefer OpenVINO's direct kernels (``"jit"``) or not
    (``"default"``), and ``kernel_ratio`` what the preference's time was over the default order's
    where the export timed both (``--kernels tune``); ``uint8_input``, for an int8 IR taking its input
    quantized, the ``scale`` and ``zero_point`` of that input. ``export_seconds`` covers
    writing (and quantizing), not verifying. Fields that do not apply are None.
    """

    model: str
    format: str
    path: Path
    bytes: int
    dynamic_batch: bool
    verified_on: str
    verified_batch_sizes: tuple[int, ...]
    tolerance: float
    export_seconds: float
    fp32_path: Path | None = None
    fp32_bytes: int | None = None
    max_abs_diff: float | None = None
    int8: str | None = None
    quantization: str | None = None
    calibration_images: int | None = None
    int8_top1_agreement: float | None = None
    int8_max_abs_diff: float | None = None
    qat_epochs: int | None = None
    qat_lr: float | None = None
    arena_bytes: int | None = None  # ExecuTorch: the memory planner's activation arena of forward
    kernels: str | None = None  # ExecuTorch: "xnnpack" or "portable"; OpenVINO: "default" or "jit"
    kernel_ratio: float | None = None  # OpenVINO, kernels "tune": the jit preference's time over default's
    uint8_input: dict[str, Any] | None = None  # OpenVINO int8 taking uint8 NHWC: its InputQuantization

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-ready values (paths as strings), leaving out those that are None.

        An ONNX report also carries the keys ONNX exports have always printed: ``fp32_onnx``,
        ``fp32_bytes``, ``fp32_max_abs_diff`` and, with int8, ``int8_onnx`` and ``int8_bytes``.
        """
        document: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            document[field.name] = value
        if self.format == "onnx":
            for key, legacy in _ONNX_KEYS.items():
                if key in document:
                    document[legacy] = document[key]
            if self.int8 is not None:
                document.update(int8_onnx=str(self.path), int8_bytes=self.bytes)
        return document
