"""Run a classifier over a loader and collect :class:`ClassificationMetrics`, without tracking grads."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
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


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    *,
    device: torch.device | str,
    channels_last: bool = True,
    autocast_dtype: torch.dtype | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    flip_tta: bool = False,
    into: ClassificationMetrics | None = None,
) -> ClassificationMetrics:
    """Metrics of ``model`` (already on ``device``) over every ``(images, labels)`` batch of ``loader``.

    Runs in eval mode under ``torch.inference_mode()`` and restores the model's train/eval mode after.
    ``autocast_dtype`` (e.g. ``torch.bfloat16``) enables autocast for the forward pass; logits are cast
    to float32 before the metrics and ``criterion`` (mean or per-image loss) see them. ``flip_tta``
    scores the mean logits of each image and its mirror image (test-time augmentation, twice the
    compute; only for data whose training used horizontal flips).
    The number of classes is the logits' width. Raises ``ValueError`` if the loader yields no image,
    unless ``into`` is given: the batches are then added to ``into`` (returned), which may stay empty,
    as one process's shard of a distributed evaluation can.
    """
    device = torch.device(device)
    _check_model_device(model, device)
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
                    if flip_tta and isinstance(output, torch.Tensor):
                        mirrored = images.flip(-1)
                        if channels_last and mirrored.ndim == 4:
                            mirrored = mirrored.contiguous(memory_format=torch.channels_last)
                        output = (output.float() + model(mirrored).float()) / 2
                if not isinstance(output, torch.Tensor):
                    raise UsageError(
                        f"model returned {type(output).__name__}, expected a logits tensor "
                        "(a features_only model cannot be evaluated)"
                    )
                logits = output.float()
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
        raise UsageError("the loader yielded no images; expected at least one batch to evaluate")
    return metrics
