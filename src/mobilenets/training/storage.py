"""The run directory's health: writable and roomy enough before training starts, tidy after a crash.

Checking up front turns "disk full after six hours" into an error in the first second. Free space
can still run out later (other jobs write too); then the checkpoint write fails without touching the
previous files (see :func:`mobilenets.atomic.save_atomic`) and training stops with a clear error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from torch import nn

from ..atomic import unwritable_reason
from ..errors import TrainingError, UsageError
from .checkpoint import checkpoint_paths

# Optimizer state per parameter, in parameter-sized tensors (SGD momentum; RMSProp square average and
# momentum; AdamW both moments).
OPTIMIZER_SLOTS = {"sgd": 1, "rmsprop": 2, "adamw": 2}
# Files a run writes atomically; a crash mid-write leaves ``.{name}.XXXX.tmp`` beside them.
RUN_FILES = (
    "last.safetensors",
    "last_state.pt",
    "best.safetensors",
    "best_state.pt",
    "config.json",
    "metrics.jsonl",
    "loss.png",
    "accuracy.png",
)


def check_writable(out: Path) -> None:
    """Create ``out`` if needed and prove a file can be written there; ``ValueError`` naming why not."""
    reason = unwritable_reason(out, folder=True)  # e.g. a file where a folder of the path should be
    if reason is None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=out)
            try:
                os.write(fd, b"mobilenets")
                os.fsync(fd)
            finally:
                os.close(fd)
                Path(probe).unlink(missing_ok=True)
        except OSError as err:
            reason = f"{err.strerror or err}"
    if reason is not None:
        raise UsageError(f"cannot write the run directory {str(out)!r}: {reason}; choose a writable --out")


def kept_checkpoint(out: Path) -> str:
    """Where the last good checkpoint of the run in ``out`` is, for error messages."""
    if checkpoint_paths(out, "last")[1].is_file():
        return f"The last good checkpoint in {str(out)!r} is unchanged."
    return "No checkpoint was written yet."


@contextlib.contextmanager
def failed_write_explained(out: Path, what: str) -> Iterator[None]:
    """Turn a failed write of ``what`` in ``out`` (disk full, directory gone) into a clear
    :class:`TrainingError`."""
    try:
        yield
    except OSError as err:
        raise TrainingError(
            f"cannot write {what} in {str(out)!r} ({err.strerror or err}); a failed write never "
            f"replaces a file. {kept_checkpoint(out)} Free some space or fix the directory, then "
            f"continue with --resume"
        ) from err


@contextlib.contextmanager
def removed_if_left_empty(out: Path, enabled: bool) -> Iterator[None]:
    """Around a run: a folder ``out`` it made and left empty (refused before writing anything) is
    removed; one that was there before, or holds files, stays."""
    fresh = enabled and not out.exists()
    try:
        yield
    finally:
        if fresh:
            with contextlib.suppress(OSError):  # not there, or not empty
                out.rmdir()


def checkpoint_bytes(model: nn.Module, optimizer: str, ema: bool) -> int:
    """About how many bytes the checkpoints of a run take: ``last`` and ``best`` plus one temp copy.

    A checkpoint is the weights file plus the state file (model, EMA, optimizer slots). Each file is
    written beside the old one before replacing it, so the largest file briefly exists twice.
    """
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    state = weights * (2 if ema else 1) + params * OPTIMIZER_SLOTS.get(optimizer, 2)
    one_checkpoint = weights + state
    return 2 * one_checkpoint + state


def check_free_space(out: Path, needed: int) -> None:
    """``ValueError`` when the filesystem of ``out`` has less than ``needed`` bytes free."""
    free = shutil.disk_usage(out).free
    if free < needed:
        raise UsageError(
            f"the run directory {str(out)!r} has {free / 1e6:.1f} MB free; this run's checkpoints need "
            f"about {needed / 1e6:.1f} MB (last and best, each written beside the old file before "
            f"replacing it) — free some space or choose another --out"
        )


def remove_stale_temp_files(out: Path) -> list[Path]:
    """Delete the temp files a killed run left half-written in ``out``; returns what was removed."""
    removed = []
    for name in RUN_FILES:
        for path in out.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
