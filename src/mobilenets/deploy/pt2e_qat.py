"""Quantization-aware fine-tuning through torchao's PT2E flow, for when post-training int8 loses too much.

The float model is captured in training mode; ``prepare_qat_pt2e`` inserts fake-quantize modules with
the scheme of :func:`~.pt2e.quantize_pt2e` (per-channel int8 weights, uint8 activations, 7-bit by
default) and folds each BatchNorm into its convolution's fake-quantized weights while it still learns
from batch statistics. A short fine-tune at a small learning rate lets the weights and the activation
ranges adapt to the rounding; then the graph moves to eval mode and ``convert_pt2e`` gives the same
int8 graph as post-training quantization (:class:`~.pt2e.Int8Model`; :func:`~.pt2e.compile_int8` for
speed).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .pt2e import (
    Int8Model,
    capture,
    check_batch,
    check_options,
    drop_unused_tensors,
    torchao_api,
    x86_quantizer,
)

Batch = tuple[torch.Tensor, torch.Tensor]


def _check_labels(labels: object, images: torch.Tensor, index: int) -> torch.Tensor:
    if isinstance(labels, torch.Tensor) and labels.dtype == torch.int64 and labels.shape == images.shape[:1]:
        return labels
    shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
    raise ValueError(
        f"training batch {index}: labels must be an int64 tensor of shape ({len(images)},), got {shape}"
    )


def quantize_qat_pt2e(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    resolution: int,
    epochs: int = 1,
    lr: float = 1e-4,
    momentum: float = 0.9,
    reduce_range: bool = True,
    keep_float: Sequence[str] = (),
) -> Int8Model:
    """``model`` fine-tuned with int8 fake quantization on ``batches``, then converted to int8.

    ``batches`` yields ``(images, labels)``: float (N, 3, ``resolution``, ``resolution``) images prepared
    as the model expects and int64 class indices (true labels, or the float model's own predictions
    for unlabelled images); it is iterated once per epoch, so pass a list or a re-iterable loader. SGD
    with momentum at ``lr`` (small: this adapts a trained model, it does not train one), cross-entropy.
    ``reduce_range`` and ``keep_float`` as in :func:`~.pt2e.quantize_pt2e`. ``model`` is not changed.
    """
    if isinstance(batches, torch.Tensor) or iter(batches) is batches:
        raise TypeError("batches must be a re-iterable of (images, labels) pairs (a list or a DataLoader)")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    check_options(model, resolution, keep_float)
    ao = torchao_api()
    quantizer = x86_quantizer(ao, reduce_range=reduce_range, keep_float=keep_float, qat=True)
    # A copy: the captured graph shares the model's parameters, which the fine-tune changes.
    prepared = ao.prepare_qat_pt2e(capture(copy.deepcopy(model), resolution, train=True), quantizer)
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=momentum)
    criterion = nn.CrossEntropyLoss()
    steps = 0
    with torch.inference_mode(False), torch.enable_grad():
        for epoch in range(epochs):
            for index, (images, labels) in enumerate(batches):
                images = check_batch(images, index, resolution, what="training")
                loss = criterion(prepared(images), _check_labels(labels, images, index))
                if not torch.isfinite(loss):
                    raise ValueError(
                        f"quantization-aware loss became {loss.item()} at epoch {epoch + 1}, batch {index}; "
                        f"try a lower lr (now {lr:g})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
    if steps == 0:
        raise ValueError("no training batch was given; quantization-aware fine-tuning needs labelled images")
    ao.move_to_eval(prepared)
    with torch.inference_mode(False), torch.no_grad():
        converted = ao.convert_pt2e(prepared)
    drop_unused_tensors(converted)
    return Int8Model(converted)
