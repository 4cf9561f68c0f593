"""Allocator setting for fast CPU inference: keep freed memory for reuse instead of returning it.

glibc serves large blocks (≥ 128 KiB by default, adjusted dynamically) with ``mmap`` and gives them
back to the kernel when freed, so every forward pass of an eager PyTorch model page-faults its
activation tensors in afresh: on the development VM that was about 70% of eager batch-32 time.
Raising the mmap and trim thresholds keeps those pages in the heap, where the next pass reuses them.
``mobilenets`` inference commands apply it (see ``--system-malloc`` to opt out); it is what
``MALLOC_MMAP_THRESHOLD_=1G MALLOC_TRIM_THRESHOLD_=2G`` would do, set from inside the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 2 << 30

_applied: str | None = None


def reuse_freed_memory() -> str | None:
    """Apply the setting once per process; a description of it, or None where it is unavailable.

    Only glibc (Linux) has ``mallopt``; elsewhere this does nothing and returns None. The process's
    resident memory then stays near its peak instead of shrinking between passes.
    """
    global _applied
    if _applied is not None:
        return _applied
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return None
    if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return None
    _applied = "glibc mallopt: M_MMAP_THRESHOLD=1 GiB, M_TRIM_THRESHOLD=2 GiB (freed memory reused)"
    return _applied


def current_setting() -> str:
    """What this process's allocator does with freed memory, for benchmark reports."""
    if _applied is not None:
        return _applied
    tuned = [name for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if name in os.environ]
    if tuned:
        return "glibc with " + ", ".join(f"{name}={os.environ[name]}" for name in tuned)
    return "system malloc (glibc defaults)"
