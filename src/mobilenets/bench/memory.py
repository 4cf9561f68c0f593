"""Real memory of one forward pass, measured two ways.

- ``forward_peak_allocated``: the most bytes that the pass's own tensor allocations hold at once,
  from every allocation and free that PyTorch's CPU allocator reports to the profiler (activations,
  temporaries of the ops, the output; not what existed before the pass). Exact and repeatable: this is
  what the activation-memory analysis predicts.
- ``forward_rss_growth`` (Linux only): how much the process's resident set grows. The kernel's
  high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` just before the pass and read
  after it; free heap memory is first handed back (``malloc_trim``) so the pass must fault in the pages
  it uses. This also counts what bypasses PyTorch's allocator (oneDNN's own buffers) and allocator
  slack, so it is larger and noisier, but it moves with the analysis.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path

import torch
from torch import nn

from ..errors import UsageError

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise UsageError(f"{key} missing from {_STATUS}")


def forward_peak_allocated(model: nn.Module, x: torch.Tensor) -> int:
    """Peak bytes held by tensors allocated during ``model(x)`` (after one warm-up pass)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.inference_mode():
        model(x)  # lazy initialisation and kernel selection happen here, not in the measured pass
        with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
            model(x)
    # The raw event list (a private attribute, stable since torch 2.0): memory events with signed sizes.
    events = [e for e in profile.profiler.kineto_results.events() if e.name() == "[memory]"]
    if not events:
        raise UsageError("the profiler reported no allocations for the forward pass")
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, live)
    return peak


def forward_rss_growth(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes by which the resident set grows during ``model(x)`` (after one warm-up pass).

    Raises ``ValueError`` where the kernel offers no way to reset the high-water mark.
    """
    if not _CLEAR_REFS.exists() or not _STATUS.exists():
        raise UsageError("measuring forward memory needs Linux's /proc/self/clear_refs and VmHWM")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    with torch.inference_mode():
        model(x)  # lazy initialisation and kernel selection happen here, not in the measured pass
        gc.collect()
        libc.malloc_trim(0)
        before = _status_bytes("VmRSS:")
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
        model(x)
        return _status_bytes("VmHWM:") - before
