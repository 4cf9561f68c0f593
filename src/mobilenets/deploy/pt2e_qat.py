"""Quantization-aware fine-tuning through torchao's PT2E flow, for when post-training int8 loses too much.

The float model is captured in training mode; ``prepare_qat_pt2e`` inserts fake-quantize modules with
the scheme of :func:`~.pt2e.quantize_pt2e` (per-channel int8 weights, uint8 activations, 7-bit by
default) and folds each BatchNorm into its convolution's fake-quantized weights. The graph is then
switched to eval mode for the fine-tune: BatchNorm keeps the trained model's running statistics (a
few hundred images in small batches would only make them worse) and dropout is off.

The fine-tune distils the float model into its fake-quantized copy: the loss is the KL divergence
from the float model's class distribution, so any images of the right kind will do, no labels. In a
one-off trial on 48 ImageNet photos, cross-entropy with hard labels instead drifted from the float
model the longer it ran (top-1 agreement below the post-training result), while distillation at a
small learning rate raised the agreement above it (scored on 1,000 held-out photos, it did not beat
post-training int8 for MobileNetV2: ``benchmarks/int8_pt2e.py --qat``). Then ``convert_pt2e`` gives
the same int8 graph as post-training quantization (:class:`~.pt2e.Int8Model`;
:func:`~.pt2e.compile_int8` for speed).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UsageError, WrongTypeError
from .pt2e import (
    X86_QUANTIZER,
    Int8Model,
    capture,
    check_batch,
    check_options,
    describe_int8,
    drop_unused_tensors,
    torchao_api,
    x86_quantizer,
)

DEFAULT_LR = 1e-5
# torchao's conv-BN folding helper, which convert_pt2e calls once per convolution kind.
_FOLD_MODULE, _FOLD_HELPER = "torchao.quantization.pt2e.qat_utils", "_fold_conv_bn_qat_helper"


@contextlib.contextmanager
def _fold_only_present_convolutions() -> Iterator[None]:
    """Skip torchao's conv-BN folding for the convolution kinds the graph does not hold.

    ``convert_pt2e`` folds BatchNorm for conv1d, conv2d, conv_transpose1d and conv_transpose2d in turn,
    each time tracing 24 small patterns with ``torch.export``: most of a conversion's time, three
    quarters of it for kinds a MobileNet never has. A helper call for an absent
    kind finds nothing to replace, so skipping it leaves the same graph. When torchao's internals differ
    from what this expects (another version), nothing is patched.
    """
    try:
        module = importlib.import_module(_FOLD_MODULE)
    except ImportError:
        module = None
    helper: Callable[..., object] | None = getattr(module, _FOLD_HELPER, None)
    if module is None or helper is None:
        yield
        return

    def present_only(
        graph_module: torch.fx.GraphModule, conv_fn: Callable[..., object], *args: object, **kwargs: object
    ) -> object:
        prefix = f"aten.{getattr(conv_fn, '__name__', '')}."
        if any(str(node.target).startswith(prefix) for node in graph_module.graph.nodes):
            return helper(graph_module, conv_fn, *args, **kwargs)
        return graph_module

    setattr(module, _FOLD_HELPER, present_only)
    try:
        yield
    finally:
        setattr(module, _FOLD_HELPER, helper)


def check_qat_values(
    *, epochs: int | None = None, lr: float | None = None, epochs_name: str = "epochs", lr_name: str = "lr"
) -> None:
    """A :class:`UsageError` for a fine-tune length below one epoch or a learning rate that is not positive.

    ``None`` is not given and passes; ``epochs_name`` and ``lr_name`` are the words the message uses.
    """
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int):
            raise UsageError(f"{epochs_name} must be a whole number of epochs, got {epochs!r}")
        if epochs < 1:
            raise UsageError(f"{epochs_name} must be >= 1, got {epochs!r}")
    if lr is not None and not (isinstance(lr, float | int) and math.isfinite(lr) and lr > 0):
        raise UsageError(f"{lr_name} must be a positive number, got {lr!r}")


def quantize_qat_pt2e(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    resolution: int,
    epochs: int = 2,
    lr: float = DEFAULT_LR,
    momentum: float = 0.9,
    reduce_range: bool = True,
    keep_float: Sequence[str] = (),
) -> Int8Model:
    """``model`` fine-tuned with int8 fake quantization to match its own float outputs, then int8.

    ``batches`` holds float (N, 3, ``resolution``, ``resolution``) images prepared as the model expects,
    like calibration batches; it is iterated once per epoch, so pass a list (e.g. ``images.split(32)``)
    or a re-iterable loader. SGD with momentum at a small ``lr``: this adapts a trained model to the
    rounding, it does not train one. ``reduce_range`` and ``keep_float`` as in
    :func:`~.pt2e.quantize_pt2e`. ``model`` is not changed.
    """
    if isinstance(batches, torch.Tensor) or iter(batches) is batches:
        raise WrongTypeError(
            "batches must be a re-iterable of (N, 3, H, W) batches: a list (images.split(32)) or a loader"
        )
    check_qat_values(epochs=epochs, lr=lr)
    check_options(model, resolution, keep_float)
    first = next(iter(batches), None)
    if first is None:
        raise UsageError("no training batch was given; quantization-aware fine-tuning needs real images")
    check_batch(first, 0, resolution, what="training")  # before the slow capture
    ao = torchao_api()
    quantizer = x86_quantizer(ao, reduce_range=reduce_range, keep_float=keep_float, qat=True)
    teacher = copy.deepcopy(model).eval()
    # Captured from a copy: the graph shares its parameters with the module it came from.
    prepared = ao.prepare_qat_pt2e(capture(copy.deepcopy(model), resolution, train=True), quantizer)
    ao.move_to_eval(prepared)  # frozen BatchNorm statistics, no dropout; weights and ranges still learn
    optimizer = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=momentum)
    seen = 0  # images per epoch
    with torch.inference_mode(False), torch.enable_grad():
        for epoch in range(epochs):
            for index, batch in enumerate(batches):
                images = check_batch(batch, index, resolution, what="training")
                seen += len(images) if epoch == 0 else 0
                with torch.no_grad():
                    target = F.log_softmax(teacher(images).float(), dim=1)
                student = F.log_softmax(prepared(images), dim=1)
                loss = F.kl_div(student, target, log_target=True, reduction="batchmean")
                if not torch.isfinite(loss):
                    raise UsageError(
                        f"quantization-aware loss became {loss.item()} at epoch {epoch + 1}, batch {index}; "
                        f"try a lower lr (now {lr:g})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    with torch.inference_mode(False), torch.no_grad(), _fold_only_present_convolutions():
        converted = ao.convert_pt2e(prepared)
    drop_unused_tensors(converted)
    int8 = Int8Model(converted, calibration_images=seen)
    how = f"fine-tuned {epochs} epoch{'' if epochs == 1 else 's'} at lr {lr:g} with int8 fake quantization"
    int8.quantization = describe_int8(X86_QUANTIZER, int8.calibration_images, keep_float, how=how)
    return int8
