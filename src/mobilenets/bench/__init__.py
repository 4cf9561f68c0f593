"""Timing helpers shared by the demo and the benchmarks, and ``mobilenets bench``'s comparison.

:mod:`.latency` times variants of one runtime interleaved in one process; :mod:`.inference` times
each variant alone in a fresh process, variants taking turns over rounds (``mobilenets bench``);
:mod:`.paired` compares two variants loaded side by side, turn by turn (``mobilenets bench --pair``).
"""

from .latency import LatencyResult, measure_interleaved, prepare_for_inference

__all__ = ["LatencyResult", "measure_interleaved", "prepare_for_inference"]
