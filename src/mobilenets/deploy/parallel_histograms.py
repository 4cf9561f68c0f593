"""ONNX Runtime's histogram calibration, sooner: one tensor per thread, and no sorting to bin.

ORT's percentile and entropy calibrators fold every calibrated tensor of every batch into its own
histogram, one tensor after another, in NumPy. Profiled on MobileNetV2 at 224 px that is three
quarters of ``quantize_onnx``'s time, and NumPy releases the GIL while it works, so
:func:`parallel_histograms` swaps ORT's collector for one that hands each tensor to a thread pool.

In the percentile method (``export --int8``'s default) most of what remained was ``np.histogram`` on
the bin edges a tensor already has: given an array of edges, NumPy sorts the values to count them,
and ORT copies each batch twice before that. Those edges are evenly spaced (ORT makes them so), so
:func:`counts_on_edges` computes each value's bin from the spacing and moves the few guesses the
edges themselves contradict, which counts exactly what NumPy counts, without the sort or the copies.
The entropy method and any input out of the ordinary (NaN, infinities, not float32, spans too narrow
for float32) still run ORT's own code, and the histograms come out bit for bit the same
(``tests/test_deploy.py`` checks it). One difference remains: when several arrays of one tensor in
one batch (``quantize_onnx`` gives one) meet 0.0 and -0.0 at an extreme, the stored zero may carry
the other sign, which no scale or zero point sees.
``benchmarks/export_time.py`` times the difference.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

# The swap changes a module attribute of onnxruntime for the duration of one quantization; concurrent
# quantizations take turns so that each restores what it found.
_SWAP = threading.Lock()
_BLOCK = 1 << 16  # values binned at once: their temporaries stay in the CPU's cache
_CORRECTIONS = 4  # steps from a guessed bin to the right one; evenly spaced edges need one at most


def counts_on_edges(values: Sequence[np.ndarray], edges: np.ndarray) -> np.ndarray | None:
    """``np.histogram(np.abs(values), bins=edges)[0]`` over all the finite ``values``, or None.

    Bins ``[edges[i], edges[i + 1])``, the last one closed, values outside dropped, as NumPy counts.
    Each value's bin is guessed from the mean spacing, then the few guesses its own edges do not hold
    are moved until they do; None when that takes more than a few steps (edges far from even), so
    that the caller counts NumPy's way.
    """
    n = edges.size - 1
    low, high = np.float64(edges[0]), np.float64(edges[-1])
    if n < 1 or not high > low:
        return None
    scale = n / (high - low)
    kind = np.result_type(edges, *values)  # compare in the type NumPy compares in
    top = kind.type(edges[-1])
    # slots: 0 below the first edge, 1..n the bins, n + 1 exactly the last edge, n + 2 above it
    bounds = np.concatenate(([-np.inf], edges, [np.nextafter(top, kind.type(np.inf)), np.inf])).astype(kind)
    step, offset = np.float32(scale), np.float32(1 - low * scale)
    if not (np.isfinite(step) and np.isfinite(offset)):  # a span too narrow for float32 guesses
        return None
    counts = np.zeros(n + 3, dtype=np.intp)
    for array in values:
        flat = array.reshape(-1)
        for start in range(0, flat.size, _BLOCK):
            x = np.abs(flat[start : start + _BLOCK])
            guess = x * step
            guess += offset
            np.clip(guess, 0, n + 1, out=guess)
            slot = guess.astype(np.intp)
            wrong = np.flatnonzero((x < bounds[slot]) | (x >= bounds[slot + 1]))
            for _ in range(_CORRECTIONS):
                if wrong.size == 0:
                    break
                value, moved = x[wrong], slot[wrong]
                moved -= value < bounds[moved]
                moved += value >= bounds[moved + 1]
                slot[wrong] = moved
                wrong = wrong[(value < bounds[moved]) | (value >= bounds[moved + 1])]
            else:
                return None
            counts += np.bincount(slot, minlength=n + 3)
    histogram = counts[1 : n + 1].copy()
    histogram[-1] += counts[n + 1]  # NumPy's last bin includes its right edge
    return histogram


def _smallest_magnitude(array: np.ndarray) -> Any:
    """``np.abs(array).min()`` a block at a time, without an absolute copy of the whole array."""
    flat = array.reshape(-1)
    return min(np.abs(flat[start : start + _BLOCK]).min() for start in range(0, flat.size, _BLOCK))


def _grow_absolute(collector: Any, name: str, arrays: Any) -> bool:
    """Fold ``arrays`` into ``name``'s absolute-value histogram as ORT's percentile collector does
    (same edges, counts and range); False, changing nothing, where ORT's own code should do it."""
    if collector.method != "percentile" or not collector.symmetric:
        return False
    entry = collector.histogram_dict.get(name)
    values = arrays if isinstance(arrays, list) else [arrays]
    ordinary = [isinstance(a, np.ndarray) and a.dtype == np.float32 and a.size > 0 for a in values]
    if (entry is not None and len(entry) != 4) or not values or not all(ordinary):
        return False
    if len({a.shape for a in values}) > 1:  # ORT stacks a list into one array, and says why it cannot
        return False
    # ORT's own reductions (which of 0.0 and -0.0 an extreme zero keeps depends on them)
    low = np.fmin.reduce([np.nanmin(a) for a in values])
    high = np.fmax.reduce([np.nanmax(a) for a in values])
    if not (np.isfinite(low) and np.isfinite(high)):  # ORT's code says what NaN or inf do
        return False
    largest = max(abs(low), abs(high))
    if entry is None:  # the first batch: NumPy's evenly spaced bins from the smallest to the largest
        smallest = min(_smallest_magnitude(a) for a in values)
        span = np.array([smallest, largest], dtype=np.float32)  # all np.histogram's edges depend on
        edges = np.histogram_bin_edges(span, bins=collector.num_bins)
        first = counts_on_edges(values, edges)
        if first is None:
            return False
        collector.histogram_dict[name] = (first, edges.astype(np.float32), low, high)
        return True
    old_hist, old_edges, old_min, old_max = entry
    edges = old_edges
    if largest > old_edges[-1]:  # more bins of the same width, up to the new largest value
        width = old_edges[1] - old_edges[0]
        edges = np.hstack((old_edges, np.arange(old_edges[-1] + width, largest + width, width)))
    hist = counts_on_edges(values, edges)
    if hist is None:
        return False
    hist[: len(old_hist)] += old_hist
    collector.histogram_dict[name] = (hist, edges.astype(np.float32), min(old_min, low), max(old_max, high))
    return True


def _collector_class(base: Any, threads: int) -> type:
    """A subclass of ORT's ``HistogramCollector`` whose ``collect`` runs each tensor in its own task."""

    class FastHistogramCollector(base):
        def collect(self, name_to_arr: dict[str, Any]) -> None:
            def one(name: str, arrays: Any) -> None:  # updates only this tensor's histogram_dict entry
                if not _grow_absolute(self, name, arrays):
                    base.collect(self, {name: arrays})

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda item: one(*item), name_to_arr.items()))

    return FastHistogramCollector


@contextmanager
def parallel_histograms(threads: int | None = None) -> Iterator[None]:
    """Within this block ORT's histogram calibration runs on ``threads`` threads (default: torch's),
    binning without sorting where it can.

    Without ORT's ``HistogramCollector`` (a renamed internal), it leaves ORT as it is: slower, the same.
    """
    from onnxruntime.quantization import calibrate

    base = getattr(calibrate, "HistogramCollector", None)
    threads = threads or torch.get_num_threads()
    if not isinstance(base, type) or not callable(getattr(base, "collect", None)):
        yield
        return
    with _SWAP:
        calibrate.HistogramCollector = _collector_class(base, max(threads, 1))
        try:
            yield
        finally:
            calibrate.HistogramCollector = base
