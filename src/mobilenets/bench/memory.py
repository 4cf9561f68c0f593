"""Real memory of one forward pass: how much the process's resident set grows while it runs.

Linux only. The kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs``
just before the pass and read after it; free heap memory is first handed back (``malloc_trim``) so the
pass must fault in the pages it uses. This counts everything the pass allocates (activations, oneDNN
reorders and scratch buffers), so it is larger than the activation-only analysis but moves with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from pathlib import Path

import torch
from torch import nn

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(key: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise ValueError(f"{key} missing from {_STATUS}")


def forward_rss_growth(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes by which the resident set grows during ``model(x)`` (after one warm-up pass).

    Raises ``ValueError`` where the kernel offers no way to reset the high-water mark.
    """
    if not _CLEAR_REFS.exists() or not _STATUS.exists():
        raise ValueError("measuring forward memory needs Linux's /proc/self/clear_refs and VmHWM")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    with torch.inference_mode():
        model(x)  # lazy initialisation and kernel selection happen here, not in the measured pass
        gc.collect()
        libc.malloc_trim(0)
        before = _status_bytes("VmRSS:")
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
        model(x)
        return _status_bytes("VmHWM:") - before
