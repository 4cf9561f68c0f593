"""Run a classifier over a loader and collect :class:`ClassificationMetrics`, without tracking grads."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .metrics import ClassificationMetrics

Batch = tuple[torch.Tensor, torch.Tensor]


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:0`` name the same device when one leaves the index out."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _check_model_device(model: nn.Module, device: torch.device) -> None:
    parameter = next(model.parameters(), None)
    if parameter is not None and not _same_device(parameter.device, device):
        raise UsageError(
            f"model is on {parameter.device} but evaluation was asked on {device}; move it first "
            f"(model.to({str(device)!r}))"
        )


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``images`` (N, C, H, W) moved by ``dy`` rows and ``dx`` columns, borders filled by reflection.

    The same size, so a network sees what pad-and-crop training showed it: the scene a few pixels off.
    Its borders differ: training pads with zeros, this reflects, which suits any network (one trained
    without pad-and-crop never saw blank borders).
    """
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return images
    height, width = images.shape[-2:]
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[..., pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def tta_views(images: torch.Tensor, *, flip: bool, shift: int) -> list[torch.Tensor]:
    """The views test-time augmentation averages: the image, its ±``shift`` moves along each axis, and
    the mirror image of each when ``flip``."""
    moves = [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else [])
    views = [shifted(images, dy, dx) for dy, dx in moves]
    return views + [view.flip(-1) for view in views] if flip else views


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: torch.device | str,
    channels_last: bool = True,
    autocast_dtype: torch.dtype | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    flip_tta: bool = False,
    shift_tta: int = 0,
    into: ClassificationMetrics | None = None,
) -> ClassificationMetrics:
    """Metrics of ``model`` (already on ``device``) over every ``(images, labels)`` batch of ``loader``.

    Runs in eval mode under ``torch.inference_mode()`` and restores the model's train/eval mode after.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) enables autocast for the forward pass; logits are cast
    to float32 before the metrics and ``criterion`` (mean or per-image loss) see them. ``flip_tta``
    scores the mean logits of each image and its mirror image (test-time augmentation, twice the
    compute; only for data whose training used horizontal flips); ``shift_tta`` adds the image moved
    by that many pixels up, down, left and right (five times the compute, ten with ``flip_tta``; for
    data trained with pad-and-crop or random crops).
    The number of classes is the logits' width. Raises ``ValueError`` if the loader yields no image,
    unless ``into`` is given: the batches are then added to ``into`` (returned), which may stay empty,
    as one process's shard of a distributed evaluation can.
    """
    device = torch.device(device)
    _check_model_device(model, device)
    if isinstance(shift_tta, bool) or not isinstance(shift_tta, int) or shift_tta < 0:
        raise UsageError(f"shift_tta must be a whole number of pixels >= 0, got {shift_tta!r}")
    was_training = model.training
    model.eval()
    metrics = into
    try:
        with torch.inference_mode():
            for images, labels in loader:
                images = images.to(device, non_blocking=True)
                if channels_last and images.ndim == 4:
                    images = images.contiguous(memory_format=torch.channels_last)
                labels = labels.to(device, non_blocking=True)
                with torch.autocast(
                    device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
                ):
                    output = model(images)
                    if (flip_tta or shift_tta) and isinstance(output, torch.Tensor):
                        if shift_tta >= min(images.shape[-2:]):
                            raise UsageError(
                                f"shift_tta {shift_tta} must be smaller than the images' side "
                                f"({min(images.shape[-2:])} px)"
                            )
                        views = tta_views(images, flip=flip_tta, shift=shift_tta)[1:]
                        memory_format = torch.channels_last if channels_last else torch.contiguous_format
                        total = output.float()
                        for view in views:
                            total = total + model(view.contiguous(memory_format=memory_format)).float()
                        output = total / (len(views) + 1)
                if not isinstance(output, torch.Tensor):
                    raise UsageError(
                        f"model returned {type(output).__name__}, expected a logits tensor "
                        "(a features_only model cannot be evaluated)"
                    )
                logits = output.float()
                # topk ranks NaN first and breaks ties between infinities arbitrarily: a broken model
                # would still get a plausible score, so it gets none, as `predict` gives none. (Training
                # evaluates `into` its own metrics, and checks its weights itself, on every process.)
                checked = into is None and logits.ndim == 2
                broken = int((~logits.isfinite().all(dim=1)).sum()) if checked else 0
                if broken:
                    raise UsageError(
                        f"the model gave NaN or infinite logits for {broken} of {logits.shape[0]} images "
                        "in a batch: its weights or its precision are broken (a NaN weight, an overflow); "
                        "no accuracy is reported"
                    )
                if metrics is None:
                    if logits.ndim != 2:
                        raise UsageError(
                            f"model returned shape {tuple(logits.shape)}, expected (batch, classes)"
                        )
                    metrics = ClassificationMetrics(logits.shape[1])
                loss = criterion(logits, labels) if criterion is not None else None
                metrics.update(logits, labels, loss)
    finally:
        model.train(was_training)
    if into is not None:
        return into
    if metrics is None or metrics.num_images == 0:
        skipped = len(getattr(loader, "skipped", ()))
        if skipped:
            raise UsageError(f"none of the {skipped:,} image files could be read; expected at least one")
        raise UsageError("the loader yielded no images; expected at least one batch to evaluate")
    return metrics
