"""Checkpoints that survive a crash mid-write and load without running pickled code.

Weights go to ``{name}.safetensors`` (no code execution on load) with a :class:`ModelCard` as metadata,
so ``mobilenets eval`` can rebuild the model from the file alone; optimizer/scheduler state, position,
best accuracy and the RNG state go to ``{name}_state.pt``, read back with ``weights_only=True``.
Each file is written to a temporary file in the same directory, fsynced and renamed over the target,
so a reader sees either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save

from ..models import MobileNet, create_model

CARD_FORMAT = "mobilenets-checkpoint/1"


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
    name: str,
    *,
    weights: Mapping[str, torch.Tensor],
    card: ModelCard,
    state: Mapping[str, Any],
) -> None:
    """Write checkpoint ``name``: ``weights`` + ``card`` as safetensors, ``state`` as a weights-only file.

    ``weights`` is the model to use (the EMA when training keeps one); ``state`` holds everything else
    a resume needs (optimizer, scheduler, raw weights, RNG, position). The state file is written
    first, so a weights file is never newer than the state it belongs to.
    """
    weights_path, state_path = checkpoint_paths(out_dir, name)
    save_atomic(state_path, lambda handle: torch.save(dict(state), handle))
    tensors = {key: value.detach().contiguous().cpu() for key, value in weights.items()}
    # save_file writes in place; serialising to bytes (same format) lets the write be atomic.
    payload = save(tensors, metadata=card.to_metadata())
    save_atomic(weights_path, lambda handle: handle.write(payload))


def load_training_state(out_dir: str | os.PathLike[str], name: str = "last") -> dict[str, Any]:
    """The training state of checkpoint ``name``, read with ``weights_only=True`` (no code runs)."""
    _, state_path = checkpoint_paths(out_dir, name)
    if not state_path.is_file():
        raise FileNotFoundError(f"checkpoint file {str(state_path)!r} does not exist")
    state: dict[str, Any] = torch.load(state_path, map_location="cpu", weights_only=True)
    return state


@dataclass(frozen=True)
class ModelCard:
    """What a trained model needs besides its weights: how to build it and how to feed it.

    Stored as the safetensors metadata (strings only) of every checkpoint the trainer writes.
    """

    model: str
    model_kwargs: Mapping[str, Any]
    classes: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    img_size: int
    data: str
    val_split: float
    seed: int
    config: Mapping[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        return {
            "format": CARD_FORMAT,
            "model": self.model,
            "model_kwargs": json.dumps(dict(self.model_kwargs), sort_keys=True),
            "classes": json.dumps(list(self.classes)),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "img_size": str(self.img_size),
            "data": self.data,
            "val_split": repr(float(self.val_split)),
            "seed": str(self.seed),
            "config": json.dumps(dict(self.config), sort_keys=True),
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], source: str) -> ModelCard:
        if metadata.get("format") != CARD_FORMAT:
            raise ValueError(
                f"{source!r} is not a mobilenets training checkpoint (metadata format "
                f"{metadata.get('format')!r}, expected {CARD_FORMAT!r})"
            )
        try:
            return cls(
                model=metadata["model"],
                model_kwargs=json.loads(metadata["model_kwargs"]),
                classes=tuple(json.loads(metadata["classes"])),
                mean=tuple(json.loads(metadata["mean"])),
                std=tuple(json.loads(metadata["std"])),
                img_size=int(metadata["img_size"]),
                data=metadata["data"],
                val_split=float(metadata["val_split"]),
                seed=int(metadata["seed"]),
                config=json.loads(metadata.get("config", "{}")),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{source!r} has damaged checkpoint metadata: {error}") from None


@dataclass(frozen=True)
class TrainedModel:
    """A model restored from a training checkpoint, in eval mode on the CPU, with its card."""

    model: MobileNet
    card: ModelCard

    def __getattr__(self, name: str) -> Any:
        # The card's facts read as the trained model's own: trained.classes, trained.img_size, ...
        if name in _CARD_FIELDS:
            return getattr(self.card, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def model_name(self) -> str:
        return self.card.model


_CARD_FIELDS = frozenset(f.name for f in fields(ModelCard)) - {"model"}


def load_trained_model(weights_path: str | os.PathLike[str]) -> TrainedModel:
    """Rebuild the model saved at ``weights_path`` (e.g. ``runs/x/best.safetensors``) and load it strictly."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise ValueError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
    card = ModelCard.from_metadata(metadata, str(path))
    model = create_model(card.model, **card.model_kwargs)
    weights = load_file(path)
    missing, unexpected = _key_differences(model.state_dict(), weights)
    if missing or unexpected:
        raise ValueError(
            f"{str(path)!r} does not match {card.model}({card.model_kwargs}): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    model.load_state_dict(weights)
    model.eval()
    return TrainedModel(model=model, card=card)


def _key_differences(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{key} {tuple(found[key].shape)} != {tuple(expected[key].shape)}"
        for key in set(expected) & set(found)
        if found[key].shape != expected[key].shape
    )
    return missing + shapes, unexpected
