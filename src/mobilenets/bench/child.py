"""One timing process of ``mobilenets bench``: one variant, alone, timed and measured.

The process sets the allocator (:mod:`.allocator`, unless ``system_malloc``) and PyTorch's thread
count, loads the variant from the prepared files (:mod:`.load`), then resets the kernel's high-water
mark of its resident memory (``/proc/self/clear_refs``), makes ``warmup`` untimed calls (compiling
variants compile in the first) and ``repeats`` timed ones, with Python's garbage collector paused.
It reports the times, its resident memory once the variant was loaded (``rss_mb``: interpreter,
libraries, weights) and the high-water mark over the calls (``peak_rss_mb``: activations, runtime
caches, compiling): what a process serving this model needs. Memory is Linux only (``/proc``).
:func:`serve_turns` is the same process kept loaded for the turns of a paired comparison.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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

    def to_dict(self) -> dict[str, Any]:
        files = {**dataclasses.asdict(self.files), "root": str(self.files.root)}
        return {**dataclasses.asdict(self), "files": files}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ChildSpec:
        files = fields["files"]
        others = {key: value for key, value in fields.items() if key != "files"}
        return cls(files=WorkFiles(**{**files, "root": Path(files["root"])}), **others)

    @classmethod
    def from_json(cls, text: str) -> ChildSpec:
        return cls.from_dict(json.loads(text))


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


def _load(spec: ChildSpec) -> Callable[[], object]:
    """This process's allocator and thread settings, then ``spec.variant`` loaded and ready to call."""
    from .allocator import reuse_freed_memory
    from .load import load_variant

    if not spec.system_malloc:
        reuse_freed_memory()
    torch.set_num_threads(spec.threads)
    return load_variant(spec.files, spec.variant, threads=spec.threads)


def _timed(call: Callable[[], object], repeats: int) -> list[float]:
    """``repeats`` timed calls in milliseconds, with the garbage collector paused."""
    times: list[float] = []
    gc.disable()
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        gc.enable()
    return times


def time_variant(spec: ChildSpec) -> ChildReport:
    """Load ``spec.variant`` in this process and time it (meant to run in a fresh process)."""
    from .allocator import current_setting

    call = _load(spec)
    memory = _CLEAR_REFS.exists() and _STATUS.exists()
    gc.collect()
    rss = _status_mb("VmRSS:") if memory else None
    if memory:
        _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident size
    with torch.inference_mode():
        for _ in range(spec.warmup):
            call()
        times = _timed(call, spec.repeats)
    peak = _status_mb("VmHWM:") if memory else None
    return ChildReport(tuple(times), current_setting(), os.getpid(), rss, peak)


def serve_turns(spec: ChildSpec, commands: IO[str], answers: IO[str]) -> None:
    """Load and warm up ``spec.variant``, answer ``ready``, then time ``spec.repeats`` calls per line read.

    One side of a paired comparison (:mod:`.paired`): the process stays loaded and idle between
    turns; ``{"ready": true}`` and each turn's ``{"times_ms": [...]}`` go back as JSON lines; it
    returns at end of input.
    """
    call = _load(spec)
    with torch.inference_mode():
        for _ in range(spec.warmup):
            call()
        answers.write(json.dumps({"ready": True}) + "\n")
        answers.flush()
        for _ in commands:
            answers.write(json.dumps({"times_ms": _timed(call, spec.repeats)}) + "\n")
            answers.flush()
