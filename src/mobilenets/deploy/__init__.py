"""Deployment: BatchNorm folding; fast PyTorch inference (oneDNN Graph, bf16); ONNX (checked in ONNX
Runtime, int8), TorchScript, torch.export, ExecuTorch (XNNPACK, int8) and OpenVINO (NNCF int8) files,
exported and verified on reload (:func:`export_verified`) and loaded back for inference
(:func:`load_deployed`); int8 in PyTorch through torchao's PT2E flow. ExecuTorch and OpenVINO are
imported only when used."""

from .bf16 import bf16_inference
from .deployed import load_deployed
from .executorch_export import ExecuTorchClassifier, export_executorch, quantize_xnnpack
from .export_checks import FORMATS
from .export_report import ExportReport
from .fuse import count_batchnorms, fuse
from .onednn_graph import OneDNNGraph
from .onnx_export import OnnxClassifier, export_onnx, max_abs_difference, read_card, read_metadata
from .openvino_export import OpenVINOClassifier, export_openvino
from .optimize import OPTIMIZE_MODES, optimize
from .pt2e import Int8Model, compile_int8, quantize_pt2e
from .pt2e_qat import quantize_qat_pt2e
from .quantize import CALIBRATION_METHODS, WEIGHT_DTYPES, quantize_onnx
from .torch_export import (
    export_program,
    export_torchscript,
    load_exported,
    read_torch_card,
    read_torch_metadata,
)
from .verified_export import export_verified

__all__ = [
    "CALIBRATION_METHODS",
    "FORMATS",
    "OPTIMIZE_MODES",
    "WEIGHT_DTYPES",
    "ExecuTorchClassifier",
    "ExportReport",
    "Int8Model",
    "OneDNNGraph",
    "OnnxClassifier",
    "OpenVINOClassifier",
    "bf16_inference",
    "compile_int8",
    "count_batchnorms",
    "export_executorch",
    "export_onnx",
    "export_openvino",
    "export_program",
    "export_torchscript",
    "export_verified",
    "fuse",
    "load_deployed",
    "load_exported",
    "max_abs_difference",
    "optimize",
    "quantize_onnx",
    "quantize_pt2e",
    "quantize_qat_pt2e",
    "quantize_xnnpack",
    "read_card",
    "read_metadata",
    "read_torch_card",
    "read_torch_metadata",
]
