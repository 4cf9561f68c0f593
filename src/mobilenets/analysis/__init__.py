"""Exact cost analysis: per-layer parameters and mult-adds, activation memory, separable vs standard."""

from .layers import LAYER_KINDS, LayerCost, layer_costs
from .memory import OpMemory, peak_activation_bytes, schedule_memory
from .separable import SeparableComparison, compare_with_standard, separable_pairs
from .summary import DTYPE_BYTES, ModelSummary, summarize
from .training_memory import saved_for_backward_bytes

__all__ = [
    "DTYPE_BYTES",
    "LAYER_KINDS",
    "LayerCost",
    "ModelSummary",
    "OpMemory",
    "SeparableComparison",
    "compare_with_standard",
    "layer_costs",
    "peak_activation_bytes",
    "saved_for_backward_bytes",
    "schedule_memory",
    "separable_pairs",
    "summarize",
]
