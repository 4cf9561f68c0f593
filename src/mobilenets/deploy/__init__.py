"""Deployment: BatchNorm folding, ONNX export checked in ONNX Runtime, int8 post-training quantization."""

from .fuse import count_batchnorms, fuse
from .onnx_export import OnnxClassifier, export_onnx, max_abs_difference, read_card, read_metadata
from .optimize import OPTIMIZE_MODES, optimize
from .quantize import CALIBRATION_METHODS, WEIGHT_DTYPES, quantize_onnx

__all__ = [
    "CALIBRATION_METHODS",
    "OPTIMIZE_MODES",
    "WEIGHT_DTYPES",
    "OnnxClassifier",
    "count_batchnorms",
    "export_onnx",
    "fuse",
    "max_abs_difference",
    "optimize",
    "quantize_onnx",
    "read_card",
    "read_metadata",
]
