"""Timing helpers shared by the demo and the benchmarks."""

from .latency import LatencyResult, measure_interleaved, prepare_for_inference

__all__ = ["LatencyResult", "measure_interleaved", "prepare_for_inference"]
