"""Checkpoints that survive a crash mid-write and load without running pickled code.

Weights go to ``{name}.safetensors`` (no code execution on load) with a :class:`ModelCard` as metadata,
so ``mobilenets eval`` can rebuild the model from the file alone; ``{name}_state.pt`` holds what a
resume needs (the weights again, optimizer, scheduler, position, best accuracy, RNG), read back with
``weights_only=True``.
Each file is written to a temporary file in the same directory, fsynced and renamed over the target,
so a reader sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..atomic import save_atomic
from ..errors import MissingFileError, UsageError
from ..weights.card import ModelCard, TrainedModel, load_trained_model
from ..weights.files import write_safetensors

__all__ = [
    "ModelCard",
    "TrainedModel",
    "checkpoint_paths",
    "load_trained_model",
    "load_training_state",
    "save_atomic",
    "save_checkpoint",
]


# What a training state must hold to resume a run.
STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "next_epoch", "next_step", "partial", "best_top1")


def checkpoint_paths(out_dir: str | os.PathLike[str], name: str = "last") -> tuple[Path, Path]:
    """The weights file and the training-state file of checkpoint ``name`` in ``out_dir``."""
    out = Path(out_dir)
    return out / f"{name}.safetensors", out / f"{name}_state.pt"


def save_checkpoint(
    out_dir: str | os.PathLike[str],
    name: str,
    *,
    weights: Mapping[str, torch.Tensor],
    card: ModelCard,
    state: Mapping[str, Any],
) -> None:
    """Write checkpoint ``name``: ``weights`` + ``card`` as safetensors, ``state`` as a weights-only file.

    ``weights`` is the model to use (the EMA when training keeps one); ``state`` holds everything a
    resume needs (raw and EMA weights, optimizer, scheduler, RNG, position), so it alone restores a
    run and a crash between the two writes cannot pair one epoch's state with another's weights.
    """
    weights_path, state_path = checkpoint_paths(out_dir, name)
    save_atomic(state_path, lambda handle: torch.save(dict(state), handle))
    write_safetensors(weights_path, weights, card.to_metadata())


def load_training_state(out_dir: str | os.PathLike[str], name: str = "last") -> dict[str, Any]:
    """The training state of checkpoint ``name``, read with ``weights_only=True`` (no code runs).

    A damaged file, a pickle that would run code, or a state from an older layout is a ``ValueError``
    naming the file and what is wrong.
    """
    _, state_path = checkpoint_paths(out_dir, name)
    if not state_path.is_file():
        raise MissingFileError(f"checkpoint file {str(state_path)!r} does not exist")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip/pickle errors of many kinds; weights_only refusals among them
        raise UsageError(
            f"{str(state_path)!r} is not a readable training state ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'no details'}); it is damaged or was not "
            f"written by mobilenets. Nothing in it was executed"
        ) from err
    missing = [key for key in STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UsageError(
            f"{str(state_path)!r} lacks {', '.join(missing)}: it was written by another tool or an "
            f"older mobilenets and cannot resume this run"
        )
    return dict(state)
