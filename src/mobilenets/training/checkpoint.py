"""Checkpoints that survive a crash mid-write and load without running pickled code.

Weights go to ``{name}.safetensors`` (no code execution on load); optimizer/scheduler state, epoch,
best accuracy and the RNG state go to ``{name}_state.pt``, read back with ``weights_only=True``.
Each file is written to a temporary file in the same directory, fsynced and renamed over the target,
so a reader sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors.torch import load_file, save
from torch import nn


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_atomic(path: str | os.PathLike[str], write_fn: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` atomically: ``write_fn`` fills a same-directory temp file that then replaces it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; match a plain open()
            write_fn(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def checkpoint_paths(out_dir: str | os.PathLike[str], name: str = "last") -> tuple[Path, Path]:
    """The weights file and the training-state file of checkpoint ``name`` in ``out_dir``."""
    out = Path(out_dir)
    return out / f"{name}.safetensors", out / f"{name}_state.pt"


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epoch: int,
    best_top1: float,
    config: Mapping[str, Any],
    name: str = "last",
) -> None:
    """Write checkpoint ``name`` (weights + training state) to ``out_dir``; ``epoch`` is the last one done."""
    weights_path, state_path = checkpoint_paths(out_dir, name)
    tensors = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    metadata = {"model": str(config.get("model", "")), "config": json.dumps(dict(config), sort_keys=True)}
    # save_file writes in place; serialising to bytes (same format) lets the write be atomic.
    payload = save(tensors, metadata=metadata)
    save_atomic(weights_path, lambda handle: handle.write(payload))
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": int(epoch),
        "best_top1": float(best_top1),
        "rng_state": torch.get_rng_state(),
    }
    save_atomic(state_path, lambda handle: torch.save(state, handle))


def load_checkpoint(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    name: str = "last",
) -> tuple[int, float]:
    """Restore checkpoint ``name`` into the given objects and the torch RNG; returns (epoch, best_top1)."""
    weights_path, state_path = checkpoint_paths(out_dir, name)
    for path in (weights_path, state_path):
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint file {str(path)!r} does not exist")
    model.load_state_dict(load_file(weights_path))
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_state"])
    return int(state["epoch"]), float(state["best_top1"])
