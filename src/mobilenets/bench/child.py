"""One timing process of ``mobilenets bench``: one variant, alone, timed and measured.

The process sets the allocator (:mod:`.allocator`, unless ``system_malloc``) and PyTorch's thread
count, loads the variant from the prepared files (:mod:`.load`), then resets the kernel's high-water
mark of its resident memory (``/proc/self/clear_refs``), makes ``warmup`` untimed calls (compiling
variants compile in the first) and ``repeats`` timed ones, with Python's garbage collector paused.
It reports the times, its resident memory once the variant was loaded (``rss_mb``: interpreter,
libraries, weights) and the high-water mark over the calls (``peak_rss_mb``: activations, runtime
caches, compiling): what a process serving this model needs. Memory is Linux only (``/proc``).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .workfiles import WorkFiles

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class ChildSpec:
    """What one timing process times: ``variant`` from ``files``, with these settings."""

    variant: str
    files: WorkFiles
    threads: int
    repeats: int
    warmup: int
    system_malloc: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        fields = json.loads(text)
        files = fields.pop("files")
        return cls(files=WorkFiles(**{**files, "root": Path(files["root"])}), **fields)


@dataclass(frozen=True)
class ChildReport:
    """What one timing process measured."""

    times_ms: tuple[float, ...]
    allocator: str
    pid: int
    rss_mb: float | None = None
    peak_rss_mb: float | None = None

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ChildReport:
        return cls(**{**fields, "times_ms": tuple(fields["times_ms"])})


def _status_mb(key: str) -> float | None:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024 / 1e6
    return None


def time_variant(spec: ChildSpec) -> ChildReport:
    """Load ``spec.variant`` in this process and time it (meant to run in a fresh process)."""
    from .allocator import current_setting, reuse_freed_memory
    from .load import load_variant

    if not spec.system_malloc:
        reuse_freed_memory()
    torch.set_num_threads(spec.threads)
    call = load_variant(spec.files, spec.variant, threads=spec.threads)
    memory = _CLEAR_REFS.exists() and _STATUS.exists()
    gc.collect()
    rss = _status_mb("VmRSS:") if memory else None
    if memory:
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(spec.warmup):
            call()
        gc.disable()
        try:
            for _ in range(spec.repeats):
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1000)
        finally:
            gc.enable()
    peak = _status_mb("VmHWM:") if memory else None
    return ChildReport(tuple(times), current_setting(), os.getpid(), rss, peak)
